"""The first run: `quantkit demo` shrinks the embedded digits CNN offline and prints a real accuracy delta;
`--zoo` downloads a pinned model once (tested against a local HTTP server), and says when it cannot."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quantkit import demo, zoo
from quantkit.errors import DownloadError
from tests.conftest import tiny_cnn
from tests.helpers import assert_one_line_error, run

COMMIT = "0" * 40


def test_the_embedded_demo_runs_offline_and_reports_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    code, stdout, err = run(
        ["demo", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")], capsys
    )
    assert code == 0, err
    assert "accuracy on 200 labelled images" in stdout and "delta (points)" in stdout
    report = json.loads((out / "report.json").read_text())
    accuracy = report["comparison"]["accuracy"]
    assert accuracy["reference"]["top1"] > 0.95  # a trained model on held-out digits
    assert abs(accuracy["top1_delta_points"]) <= 1.0 and report["passed"] is True
    assert (out / "digits_cnn.int8.onnx").exists()


class _Server:
    """A local HTTP server over a folder; counts the requests."""

    def __init__(self, root: Path) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                outer.requests += 1
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[_Server, zoo.ZooModel, bytes]]:
    """A tiny model served as a model-zoo .tar.gz, and its ZooModel entry."""
    model = tiny_cnn(tmp_path / "tiny.onnx").read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("tiny-12/tiny-12.onnx")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
    archive = buffer.getvalue()
    path = "validated/vision/classification/tiny/model/tiny-12.tar.gz"
    (tmp_path / "site" / COMMIT / path).parent.mkdir(parents=True)
    (tmp_path / "site" / COMMIT / path).write_bytes(archive)
    entry = zoo.ZooModel("tiny", COMMIT, path, hashlib.sha256(archive).hexdigest(), len(archive), "test")
    server = _Server(tmp_path / "site")
    yield server, entry, model
    server.httpd.shutdown()


def test_zoo_download_is_checked_cached_and_reused(
    served: tuple[_Server, zoo.ZooModel, bytes], tmp_path: Path
) -> None:
    server, entry, model = served
    first = zoo.fetch(entry, tmp_path / "cache", server.url)
    assert first.read_bytes() == model and server.requests == 1
    assert zoo.fetch(entry, tmp_path / "cache", server.url) == first and server.requests == 1  # cached


def test_a_download_that_fails_its_checksum_keeps_nothing(
    served: tuple[_Server, zoo.ZooModel, bytes], tmp_path: Path
) -> None:
    server, entry, _ = served
    wrong = zoo.ZooModel(entry.name, entry.commit, entry.path, "f" * 64, entry.size, "test")
    with pytest.raises(DownloadError, match="does not match its pinned sha256"):
        zoo.fetch(wrong, tmp_path / "cache", server.url)
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_network_and_missing_files_say_so(
    served: tuple[_Server, zoo.ZooModel, bytes], tmp_path: Path
) -> None:
    server, entry, _ = served
    missing = zoo.ZooModel(entry.name, entry.commit, "nowhere.onnx", entry.sha256, entry.size, "test")
    with pytest.raises(DownloadError, match="HTTP 404"):
        zoo.fetch(missing, tmp_path / "cache", server.url)
    with pytest.raises(DownloadError, match="no network"):
        zoo.fetch(entry, tmp_path / "cache", "http://127.0.0.1:9", timeout=5)


def test_demo_zoo_shrinks_the_downloaded_model(
    served: tuple[_Server, zoo.ZooModel, bytes],
    tmp_path: Path,
    image_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, entry, _ = served
    monkeypatch.setitem(zoo.ZOO, "tiny", entry)
    result = demo.from_zoo(
        "tiny",
        image_dir,
        None,
        None,
        tmp_path / "out",
        tmp_path / "cache",
        demo_progress,
        base_url=server.url,
    )
    assert Path(result.output).exists() and (tmp_path / "out" / "report.json").exists()
    assert Path(result.model).parent == tmp_path / "cache" / "zoo"


def demo_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def test_demo_options_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(["demo", "--zoo", "nosuch", "--images", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "'nosuch' is not a known model", "mobilenetv2")
    code, _, err = run(["demo", "--zoo", "mobilenetv2"], capsys)
    assert_one_line_error(code, err, "--zoo needs --images DIR")


def test_zoo_options_without_zoo_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """hq114 F9: demo --images / --labels / --eval-images without --zoo were ignored, a path that does not
    exist too, and the embedded demo ran."""
    code, _, err = run(
        ["demo", "--images", str(tmp_path / "none"), "--output-dir", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, "--images goes with --zoo NAME")
    assert not (tmp_path / "o").exists()
