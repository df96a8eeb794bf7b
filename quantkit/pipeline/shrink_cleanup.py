"""shrink's --output-dir: the names it writes, and an earlier run's verdict removed where a run ends in
exit 2 (known by content: nothing else there is touched)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import onnx

from quantkit.pipeline.writing import conversion_record

REPORTS = ("report.json", "report.md", "junit.xml", "report.html")


def outputs(model_path: Path) -> tuple[str, ...]:
    """The names shrink may write in --output-dir."""
    return (f"{model_path.stem}.int8.onnx", *REPORTS)


def drop_earlier_verdict(output_dir: Path, model_path: Path | None = None) -> None:
    """Remove the reports an earlier shrink wrote into output_dir, and its INT8 model of `model_path`
    (known by their content: nothing else there is touched), for a run that ends in exit 2 before it
    reaches shrink() (hq71 F2: a mistyped gate, flag or config key left the earlier release's PASS
    junit.xml published as this run's)."""
    if model_path is not None:
        _drop_earlier_model(output_dir / outputs(model_path)[0])
    for name in REPORTS:
        drop_report(output_dir / name)


def drop_report(path: Path) -> None:
    """`path` removed where it is a shrink report (its first 4 KB say so): never a file of the user's."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return
    if b"quantkit shrink" in head or b"quantkit-shrink" in head:
        with contextlib.suppress(OSError):
            path.unlink()


def _drop_earlier_model(path: Path) -> None:
    """An earlier run's INT8 model (quantkit's metadata in it) removed beside this run's error: hunt38 F11,
    a shrink refused for a mistyped --labels removed the earlier reports and left their model behind."""
    try:
        model = onnx.load(str(path), format="protobuf", load_external_data=False)
    except Exception:  # absent, unreadable, or not a model: not ours to remove
        return
    if conversion_record(model) is not None:
        with contextlib.suppress(OSError):
            path.unlink()
