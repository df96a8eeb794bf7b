"""Option defaults from [tool.quantkit] in ./pyproject.toml and quantkit.toml beside the model; flags win;
--print-config shows the resolved settings and where each comes from; bad files fail with one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import tiny_cnn
from tests.helpers import assert_one_line_error, run


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (the working directory) with models/model.onnx."""
    (tmp_path / "models").mkdir()
    tiny_cnn(tmp_path / "models" / "model.onnx")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_files_fill_options_and_flags_win(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "pyproject.toml").write_text("[tool.quantkit]\nthreads = 2\nnum-images = 50\nruns = 7\n")
    (project / "models" / "quantkit.toml").write_text(
        "num-images = 10\n[shrink]\nmin-speedup = 1.2\nruns = 9\n"
    )
    argv = ["shrink", "models/model.onnx", "--images", "img", "--output-dir", "out", "--threads", "1"]
    code, stdout, err = run([*argv, "--print-config"], capsys)
    assert code == 0, err
    lines = dict(line.split("  # ") for line in stdout.splitlines() if "  # " in line)
    assert lines["threads = 1"] == "command line"  # the flag over pyproject.toml's 2
    # quantkit.toml over pyproject.toml's 50; each named (hq71 F11: 'config file', which one unsaid)
    assert lines["num-images = 10"] == "config file: models/quantkit.toml"
    assert lines["min-speedup = 1.2"] == lines["runs = 9"] == "config file: models/quantkit.toml"
    assert lines["seed = 0"] == "default" and lines[f'images = "{project / "img"}"'] == "command line"
    from quantkit.cli.config_files import tomllib

    settings = tomllib.loads(stdout)  # hq109 F10: `min-sqnr = null` made it no TOML to paste back
    assert settings["threads"] == 1 and "min-sqnr" not in settings and "model" not in settings
    (project / "models" / "quantkit.toml").write_text(stdout)  # hq116 F5: pasted back, 'unknown option'
    code, again, _ = run(["shrink", "models/model.onnx", "--print-config"], capsys)
    # pasted beside the model, images = "img" read models/img (from the file's folder): paths print absolute
    assert code == 0 and f'images = "{project / "img"}"  # config file: models/quantkit.toml' in again
    assert "# min-sqnr: not set (the command's own default)" in stdout.splitlines()
    assert '# model: "models/model.onnx" (an argument, given on the command line)' in stdout.splitlines()


def test_a_switch_a_file_turns_on_a_flag_turns_off(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """hq71 F6: a repository's `exit-zero = true` could not be undone for one run (no --no-exit-zero)."""
    (project / "models" / "quantkit.toml").write_text("[shrink]\nexit-zero = true\n")
    argv = ["shrink", "models/model.onnx", "--images", "img", "--output-dir", "out", "--print-config"]
    assert "exit-zero = true  # config file: models/quantkit.toml" in run(argv, capsys)[1]
    assert "exit-zero = false  # command line" in run([*argv, "--no-exit-zero"], capsys)[1]


def test_a_run_uses_the_file(project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "models" / "quantkit.toml").write_text("[calibrate]\nnum-images = 5\n")
    code, stdout, err = run(
        ["calibrate", "models/model.onnx", "--images", str(image_dir), "-o", "t.json"], capsys
    )
    assert code == 0, err
    assert "on 5 images" in stdout
    assert "quantkit.toml: num-images (flags given override them; --print-config shows" in stdout
    code, stdout, err = run(
        ["calibrate", "models/model.onnx", "--images", str(image_dir), "-o", "t.json", "-q"], capsys
    )
    assert code == 0 and stdout == "", err  # --quiet: files, errors, warnings only
    (project / "models" / "quantkit.toml").write_text('[compare]\nruns = 0\nmarkdown = "r.md"\n')
    argv = ["compare", "models/model.onnx", "models/model.onnx", "--images", str(image_dir), "--json", "-"]
    code, stdout, err = run(argv, capsys)  # hunt38 F4: the line went to stdout before the JSON
    assert code == 0 and json.loads(stdout)["schema"] and "options from" in err
    assert ": markdown, runs (flags given" in err  # hq127 F5: 'markdown-path', the parameter's name


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("bogus = 1\n", "unknown option 'bogus'; keys are option names without the dashes"),
        ("num_images = 3\n", "unknown option 'num_images' (did you mean 'num-images'?)"),
        ("[convrt]\nmethod = 'mse'\n", "[convrt] is not a quantkit command"),
        ("[tool.quantkit]\nnum-images = 3\n", "[tool.quantkit] belongs in pyproject.toml"),  # hunt30
        ("[convert]\nnum-imgs = 3\n", "[convert] unknown option 'num-imgs'"),
        ("num-images = \n", "is not valid TOML"),
        ("quiet = true\n", "quiet is not read from files; pass -q (--quiet)"),  # hq146 F7
        ("[convert]\nverbose = true\n", "[convert] verbose is not read from files; pass -v"),
        ("mean = {a = 1}\n", "mean takes a value, not a table: mean = ..."),
        ("quiet = true\n", "quiet is not read from files; pass -q (--quiet)"),  # hq146 F7
        ("[convert]\nverbose = true\n", "[convert] verbose is not read from files; pass -v"),
        ("mean = {a = 1}\n", "mean takes a value, not a table: mean = ..."),
    ],
)
def test_bad_files_fail_with_one_line(
    project: Path, text: str, phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "models" / "quantkit.toml").write_text(text)
    code, _, err = run(["calibrate", "models/model.onnx", "--images", "img", "-o", "t.json"], capsys)
    assert_one_line_error(code, err, phrase)


def test_a_value_of_the_wrong_type_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "pyproject.toml").write_text("[tool.quantkit]\nnum-images = 'many'\n")
    code, _, err = run(["calibrate", "models/model.onnx", "--images", "img", "-o", "t.json"], capsys)
    assert_one_line_error(code, err, "num-images")


def test_a_relative_path_is_read_from_the_files_folder(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt32: labels = "../labels.txt" in quantkit.toml beside the model was read from the working
    directory, so the file worked only when the command ran from the model's folder."""
    (project / "pyproject.toml").write_text("[tool.quantkit]\ncache-dir = 'cache'\n")
    (project / "models" / "quantkit.toml").write_text(
        "[shrink]\nlabels = '../labels.txt'\neval-images = '/data/eval'\n[compare]\njson = '-'\n"
    )
    argv = ["shrink", "models/model.onnx", "--images", "img", "--output-dir", "out", "--print-config"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert f'labels = "{project / "models" / ".." / "labels.txt"}"' in stdout  # the model's folder
    assert 'eval-images = "/data/eval"' in stdout  # absolute: as it is
    assert f'cache-dir = "{project / "cache"}"' in stdout  # pyproject.toml's folder: the working one


def test_every_path_option_is_known_to_the_files() -> None:
    """config_files.PATH_OPTIONS names every option that takes a path, of every command."""
    import typer.main

    from quantkit.cli.app import app
    from quantkit.cli.config_files import PATH_OPTIONS

    group = typer.main.get_command(app)
    found = {
        p.opts[0].lstrip("-")
        for command in getattr(group, "commands", {}).values()
        for p in command.params
        if p.opts and p.opts[0].startswith("--") and "Path" in str(p.bare_type())  # type: ignore[attr-defined]
    }
    assert found == PATH_OPTIONS


def test_a_toml_array_is_the_comma_separated_list(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """hunt32: exclude-nodes = ["a", "b"] reached the option as the text "['a', 'b']"."""
    (project / "models" / "quantkit.toml").write_text(
        "exclude-nodes = ['c1', 'c2']\nmean = [0.5, 0.5, 0.5]\n"
    )
    argv = ["convert", "models/model.onnx", "-c", "t.json", "-o", "o.onnx", "--print-config"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert 'exclude-nodes = "c1,c2"  # config file' in stdout


def test_print_config_shows_a_value_the_run_refuses_as_such(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt32: num-images = 2.5 showed as `num-images = null  # config file`, which reads as every image."""
    (project / "models" / "quantkit.toml").write_text("num-images = 2.5\n")
    argv = ["calibrate", "models/model.onnx", "--images", "img", "--print-config"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "num-images = 2.5  # config file: not a valid value, the run refuses it" in stdout


def test_print_config_without_the_model_says_its_quantkit_toml_is_unread(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq153 F4: with no model, a quantkit.toml's to = "int9" showed as 'to = "int8"  # default'."""
    (project / "models" / "quantkit.toml").write_text('to = "int9"\n')
    code, stdout, err = run(["convert", "--print-config"], capsys)
    assert code == 0, err
    said = "# no model given: the quantkit.toml beside a model is not read here; give the model to see what"
    assert said + " it sets" in stdout
    code, stdout, err = run(["convert", "models/model.onnx", "--print-config"], capsys)
    assert code == 0 and "no model given" not in stdout
    assert 'to = "int9"  # config file: not a valid value, the run refuses it' in stdout


def test_a_file_set_option_is_named_where_it_fails_and_toml_booleans_are_switches(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt38 F9: a top-level threads = 0 (all cores, for calibrate) failed compare with '--threads must be
    at least 1' and no word of the file; range-cap = false was refused as not 'on' / 'off'."""
    (project / "models" / "quantkit.toml").write_text("threads = 0\n")
    argv = ["compare", "models/model.onnx", "models/model.onnx", "--images", str(image_dir), "--runs", "0"]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "--threads must be at least 1, got 0 (--threads was set in")
    assert "quantkit.toml; a [compare] table there sets it for this command alone)" in " ".join(err.split())
    code, _, err = run([*argv, "--threads", "0"], capsys)  # given as a flag: the flag is the user's own
    assert code == 2 and "was set in" not in err
    (project / "models" / "quantkit.toml").write_text("[compare]\nthreads = 0\n")  # hq109 F10: in the
    code, _, err = run(argv, capsys)  # table already, it was told a table would set it for compare alone
    assert "quantkit.toml, in its [compare] table)" in " ".join(err.split()), err
    (project / "pyproject.toml").write_text("[tool.quantkit]\nseed = 3\n")  # hq128 F6: both files named
    code, _, err = run(argv, capsys)
    said = " ".join(err.split())
    assert "(--threads was set in models/quantkit.toml, in its [compare] table)" in said, err
    (project / "models" / "quantkit.toml").write_text("range-cap = false\nbias-correction = true\n")
    code, stdout, err = run(
        ["convert", "models/model.onnx", "-c", "t.json", "-o", "o.onnx", "--print-config"], capsys
    )
    assert code == 0, err
    assert 'range-cap = "off"  # config file' in stdout and 'bias-correction = "on"  # config file' in stdout


def test_a_flag_wins_over_a_files_other_source_of_samples(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt38 F9: images = ... in quantkit.toml refused `calibrate --inputs DIR` ('reads one of')."""
    import numpy as np

    arrays = tmp_path / "arrays"
    arrays.mkdir()
    for k in range(3):
        np.save(arrays / f"s{k}.npy", np.random.default_rng(k).random((3, 16, 16)).astype(np.float32))
    (project / "models" / "quantkit.toml").write_text('images = "no-such-folder"\n')
    argv = ["calibrate", "models/model.onnx", "--inputs", str(arrays), "-o", "t.json"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "3 arrays" in stdout or "on 3" in stdout, stdout


def test_a_top_level_key_convert_reads_only_with_a_budget_does_not_stop_it(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hunt38 F9: output-kind / detector set for calibrate, compare and shrink refused every convert
    ('convert reads --output-kind only with --max-drop'); as flags they still are."""
    code, _, err = run(["calibrate", "models/model.onnx", "--images", str(image_dir), "-o", "t.json"], capsys)
    assert code == 0, err
    (project / "models" / "quantkit.toml").write_text('output-kind = "values"\ndetector = "yolox"\n')
    argv = ["convert", "models/model.onnx", "-c", "t.json", "--min-sqnr", "0"]
    code, _, err = run([*argv, "-o", "o.onnx"], capsys)
    assert code == 0, err
    code, _, err = run([*argv, "--output-kind", "values", "-o", "p.onnx"], capsys)
    assert_one_line_error(code, err, "convert reads --output-kind only with --max-drop")


def test_files_as_editors_save_them_and_the_table_each_one_names(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq61: a quantkit.toml saved with a BOM was 'not valid TOML (Invalid statement)'; input-size = [16, 16]
    (a pair of integers, as the message asks) was refused; an option from pyproject.toml was said to be
    set for one command by a [compare] table, which pyproject.toml spells [tool.quantkit.compare]."""
    (project / "models" / "quantkit.toml").write_bytes(b"\xef\xbb\xbfinput-size = [16, 16]\nnum-images = 4\n")
    argv = ["calibrate", "models/model.onnx", "--images", str(image_dir), "-o", "t.json"]
    code, out, err = run(argv, capsys)
    assert code == 0 and "16x16" in out, err
    (project / "models" / "quantkit.toml").unlink()
    (project / "pyproject.toml").write_text("[tool.quantkit]\nthreads = 0\n")
    argv = ["compare", "models/model.onnx", "models/model.onnx", "--images", str(image_dir), "--runs", "0"]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "pyproject.toml; a [tool.quantkit.compare] table there sets it for this")
    code, _, err = run(
        [
            "calibrate",
            "models/model.onnx",
            "--images",
            str(image_dir),
            "-o",
            "u.json",
            "--input-size",
            "0x16",
        ],
        capsys,
    )
    assert_one_line_error(
        code, err, "--input-size takes HxW like 224x224 (or a pair of integers), each at least 1"
    )


def test_an_address_from_the_environment_is_not_blamed_on_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq109 F2: RAY_ADDRESS wins over quantkit.toml's ray (click ranks the environment over the files),
    but a cluster that did not answer was said to be '--ray ... set in quantkit.toml'."""
    from quantkit.cli.entry import _from_file

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    message = "no Ray cluster answers at 127.0.0.1:1 (Connection refused); check --ray or RAY_ADDRESS"
    assert _from_file(message, ["calibrate"], {"calibrate": {"ray": "10.9.9.9:6379"}}) == ""
    monkeypatch.delenv("RAY_ADDRESS")
    assert "--ray was set in" in _from_file(message, ["calibrate"], {"calibrate": {"ray": "10.9.9.9:6379"}})


def test_a_path_written_as_a_number_says_to_quote_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq109 F9: images = 2024 (a folder named by a year, a TOML integer) read 'Input is not a valid path
    for <class 'pathlib.Path'>'."""
    model = tiny_cnn(tmp_path / "m.onnx")
    (tmp_path / "quantkit.toml").write_text("images = 2024\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["calibrate", str(model), "-o", str(tmp_path / "t.json")], capsys)
    assert_one_line_error(code, err, 'images takes a path, as text; got 2024 (quote it: images = "2024")')


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('output-dir = ["a", "b"]\n', "output-dir takes one path; got a list of 2"),  # hq114 F1: 'a,b/'
        ("output-dir = 7\n", "output-dir takes a path, as text; got 7"),  # F3: a traceback, exit 1
        ("output-dir = 1979-05-27\n", "output-dir takes a path, as text; got 1979-05-27"),
    ],
)
def test_a_path_key_of_another_type_is_one_line(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    (project / "models" / "quantkit.toml").write_text(text)
    code, _, err = run(["shrink", "models/model.onnx", "--images", str(image_dir), "--runs", "0"], capsys)
    assert_one_line_error(code, err, said)
    assert not (project / "models" / "a,b").exists() and not (project / "a,b").exists()


def test_a_pyproject_whose_tool_is_no_table_is_not_read_as_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq114 F4: `tool = "x"` in pyproject.toml made every command, --help and --version too, an
    internal error."""
    (project / "pyproject.toml").write_text('tool = "x"\n')
    code, _, err = run(["--version"], capsys)
    assert code == 0 and "internal error" not in err


def test_an_option_given_twice_with_two_values_is_refused(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq114 F2: `--to int8 --to fp16` wrote an FP16 model and `--max-drop 1 --max-drop 50` gated at 50
    (click keeps the last); path options were refused already."""
    argv = ["convert", "models/model.onnx", "--to", "int8", "--to", "fp16", "-o", "o.onnx"]
    assert_one_line_error(*run(argv, capsys)[::2], "--to is given twice (int8 and fp16); give it once")
    assert not (project / "o.onnx").exists()
    same = ["compare", "models/model.onnx", "models/model.onnx", "--images", str(image_dir), "--runs", "0"]
    assert run([*same, "--threads", "1", "--threads", "1"], capsys)[0] == 0  # the same value twice: one
    assert run([*same, "--threads", "1", "--threads", "01"], capsys)[0] == 0  # hq117 F3: one number
    excluded = [
        "convert",
        "models/model.onnx",
        "-o",
        "o.onnx",
        "--exclude-nodes",
        "A",
        "--exclude-nodes",
        "B",
    ]
    said = "--exclude-nodes is given twice (A and B); give it once, the names comma-separated (A,B)"
    assert_one_line_error(*run(excluded, capsys)[::2], said)  # hq117 F1: the list form unsaid


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--workers", str(2**63)], "is more than the 256 local processes quantkit starts"),  # hq114 F5
        (["--runs", str(2**63)], "--runs and --warmup take at most 100,000 runs each"),  # hq114 F6
        (["--warmup", "1000001"], "--runs and --warmup take at most 100,000 runs each"),
    ],
)
def test_counts_past_any_use_are_refused(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], flags: list[str], said: str
) -> None:
    """hq114 F5, F6: --workers 2**63 and --runs 2**63 were internal errors, --workers 1e10 ran out of
    memory blaming --batch-size, and --warmup 2**63 ran until killed."""
    argv = ["compare", "models/model.onnx", "models/model.onnx", "--images", str(image_dir), *flags]
    assert_one_line_error(*run(argv, capsys)[::2], said)


@pytest.mark.parametrize(
    "flags",
    [
        ["--std", "1e-300"],
        ["--std", "1e-39"],
        ["--mean", "1e300"],
        ["--std", "1e39"],  # hq117 F2: every sample 0, exit 0
        ["--mean", "1e300", "--std", "1e300"],  # hq117 F2: the ratio alone passed
    ],
)
def test_a_normalisation_past_float32_is_one_line(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    """hq114 F7: --std 1e-300 and --mean 1e300 passed their checks, then numpy's overflow warnings took
    8-24 lines and a NaN/Inf error named neither option."""
    argv = ["calibrate", "models/model.onnx", "--images", str(image_dir), "-o", "t.json", *flags]
    assert_one_line_error(*run(argv, capsys)[::2], "--mean / --std put the samples past float32's range")


def test_a_working_folder_too_deep_to_search_is_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """hq122 F7: in a working folder 4441 characters deep every command failed 'File name too long
    (<cwd>/pyproject.toml); check the path and that the disk is writable and not full'."""
    monkeypatch.chdir(tmp_path)
    for _ in range(22):  # past PATH_MAX (4096), one relative step at a time
        Path("d" * 200).mkdir()
        os.chdir("d" * 200)
    code, _, err = run(["check", "m.onnx"], capsys)
    assert_one_line_error(
        code, err, "cannot look for pyproject.toml in the working folder (File name too long;"
    )
    assert "run quantkit from a folder of a shorter path" in err


def test_a_files_percentile_without_its_method_is_refused(
    project: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq146 F7: [convert] percentile = 99.9 under the default --method mse was read by nothing and
    said nothing, where a file's pad (read by nothing) is refused."""
    table = project / "t.calib.json"
    assert (
        run(["calibrate", "models/model.onnx", "--images", str(image_dir), "-o", str(table)], capsys)[0] == 0
    )
    (project / "models" / "quantkit.toml").write_text("[convert]\npercentile = 99.9\n")
    argv = ["convert", "models/model.onnx", "-c", str(table), "-o", "q.onnx"]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "--percentile sets --method percentile's range")
    assert "quantkit.toml" in err
    (project / "models" / "quantkit.toml").write_text('[convert]\npercentile = 99.9\nmethod = "percentile"\n')
    assert run(argv, capsys)[0] == 0
    assert run([*argv, "--method", "mse"], capsys)[0] == 0  # hq153 F3: a one-off method over the file's


def test_print_config_refuses_what_the_run_would(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """hq146 F11: --print-config showed --to int9 as 'not set (the command's own default)' and skipped an
    unknown option, exit 0; the settings without the model are still shown."""
    code, _, err = run(["convert", "models/model.onnx", "--to", "int9", "--print-config"], capsys)
    assert_one_line_error(code, err, "Invalid value for '--to'")
    assert err.rstrip().endswith("the run would refuse it")
    code, _, err = run(["convert", "models/model.onnx", "--bogus", "3", "--print-config"], capsys)
    assert code == 2 and "No such option: --bogus" in err
    code, out, err = run(["calibrate", "--print-config"], capsys)
    assert code == 0 and "# quantkit calibrate: resolved settings" in out, err


def test_a_files_image_options_do_not_block_model_ready_arrays(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """hq151 F4: mean / std in quantkit.toml (even its [calibrate] table) made calibrate --inputs and
    compare --inputs refuse, no flag undoing them; those options shape images, which arrays are not."""
    import numpy as np

    folder = project / "in"
    folder.mkdir()
    for k in range(4):
        np.save(folder / f"{k}.npy", np.random.default_rng(k).random((3, 16, 16), np.float32))
    (project / "models" / "quantkit.toml").write_text(
        '[calibrate]\nmean = "1,2,3"\n[compare]\nstd = "2,2,2"\n'
    )
    argv = ["calibrate", "models/model.onnx", "--inputs", str(folder), "-o", "t.calib.json"]
    assert run(argv, capsys)[0] == 0
    argv = ["compare", "models/model.onnx", "models/model.onnx", "--inputs", str(folder), "--runs", "0"]
    assert run(argv, capsys)[0] == 0
