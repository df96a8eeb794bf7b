"""quantkit as a user installs it: the wheel built from this tree holds the embedded demo, and a fresh
environment with only that wheel installed (no checkout on its path) runs `quantkit demo` from another
folder. The README says how, in its first screen."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "quantkit" / "demo_data"
# What a build reads besides the package; the rest of a clone (bench/ holds 0.5 GB) is not needed.
BUILD_FILES = ("pyproject.toml", "README.md", "MANIFEST.in", "LICENSE", "setup.py", "setup.cfg")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` makes of this tree, built in a copy: a build writes build/ and *.egg-info
    beside its sources, and this tree's own egg-info (from the editable install) is not in a clone."""
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "quantkit", source / "quantkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in BUILD_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    # Build isolation, as `pip install .` does: setuptools comes from the package index or pip's cache.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (found,) = dist.glob("quantkit-*.whl")
    return found


def test_the_wheel_holds_the_embedded_demo(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    in_tree = {
        p.relative_to(ROOT).as_posix() for p in DEMO_DATA.rglob("*") if p.is_file() and p.name != ".DS_Store"
    }
    assert len([n for n in in_tree if n.endswith(".png")]) == 400  # 200 calibration + 200 evaluation
    assert in_tree - names == set(), "demo files missing from the wheel: widen [tool.setuptools.package-data]"
    assert {"quantkit/demo_data/digits_cnn.onnx", "quantkit/demo_data/labels.txt"} <= names
    assert not any(n.startswith(("tests/", "bench/", "calibration_data/")) for n in names)


def _environment(where: Path) -> Path:
    """A fresh virtual environment whose dependencies (onnx, onnxruntime, numpy, ...) are this
    interpreter's, reached through a .pth line after its own site-packages: nothing is downloaded, and
    the .pth files of this interpreter's site-packages (the editable install of the checkout among them)
    are not run, so `import quantkit` can only find the wheel's copy. Returns its python."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "dependencies.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    return python


def test_quantkit_demo_runs_from_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    python = _environment(tmp_path / "env")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GITHUB_STEP_SUMMARY")}
    work = tmp_path / "work"  # outside the checkout, as a user's folder
    work.mkdir()

    where = subprocess.run(
        [str(python), "-c", "import quantkit; print(quantkit.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(tmp_path / "env"), f"quantkit imported from {package}, not the wheel"

    quantkit = tmp_path / "env" / "bin" / "quantkit"
    version = subprocess.run([str(quantkit), "--version"], capture_output=True, text=True, cwd=work, env=env)
    assert version.returncode == 0 and version.stdout.startswith("quantkit 0.1.0"), version.stderr
    demo = subprocess.run(
        [str(quantkit), "demo", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = work / "quantkit-demo"  # where the README's First run says the reports go
    written = {p.name for p in out.iterdir()}
    assert {"digits_cnn.int8.onnx", "report.json", "report.md", "junit.xml"} <= written
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    # the model the demo ran is the wheel's copy, not the checkout's
    assert Path(report["model"]).resolve() == (package / "demo_data" / "digits_cnn.onnx").resolve()
    assert report["comparison"]["accuracy"]["reference"]["top1"] > 0.95


def test_the_readme_says_how_to_install_and_run_in_its_first_screen() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:45])
    for words in (
        "## Install",
        "pip install .",
        "pip install quantkit-",
        "quantkit --version",
        "make install",
        "make demo",
        "make test",
        ".venv/bin/quantkit",
        "source .venv/bin/activate",
        "## First run",
        "quantkit demo",
        "quantkit-demo/",
    ):
        assert words in first_screen, f"the README's first screen no longer says {words!r}"


USER_SCRIPT = """
from __future__ import annotations

from pathlib import Path

import numpy as np

import quantkit


def release(model: Path, images: list[Path], out: Path) -> float:
    preprocess = quantkit.Preprocess(preset="unit", mean="0,0,0", std=[1, 1, 1], input_size="32x32")
    quantkit.Preprocess(mean=np.array([0.5, 0.5, 0.5]), bgr="on", resize="letterbox", pad="114")
    table = quantkit.calibrate(model, data=images, output=out / "t.calib.json", preprocess=preprocess)
    quantkit.calibrate(model, data=[np.zeros((3, 32, 32), np.float32)], output=out / "a.calib.json")
    result = quantkit.convert(model, to="int8", calibration=table, output=out / "m.int8.onnx")
    if isinstance(result, quantkit.ConvertSummary):
        counts: dict[str, int] = result.quantized_by_type
    report = quantkit.compare(model, out / "m.int8.onnx", data=str(images[0].parent))
    outcome = quantkit.shrink(model, data=images, output_dir=out, max_drop=1.0)
    passed: bool = outcome.passed
    return float(report.top1_delta or 0.0) + table.images_used + len(counts) + passed
"""


def test_a_users_typed_code_checks_against_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    """hq103 F5: no py.typed marker, so under mypy --strict an installed quantkit was untyped (every
    result Any); and the README's own Preprocess(preset="unit") was a type error once typed."""
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    if mypy is None:
        pytest.skip("mypy is not installed here (make install's dev tools)")
    python = _environment(tmp_path / "env")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    assert "quantkit/py.typed" in zipfile.ZipFile(wheel).namelist()
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    checked = subprocess.run(
        [mypy, "--strict", "--no-incremental", "--python-executable", str(python), str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
