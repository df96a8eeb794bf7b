"""quantkit's --ray on a real cluster (.ci/ray_cluster: two nodes, loopback only): the same bytes as one
process, a killed worker's chunk rerun, a chunk that fails twice named. Skipped without RAY_ADDRESS."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from quantkit.errors import WorkerError
from quantkit.parallel.ray_pool import RayPool
from quantkit.pipeline import shards
from tests import test_workers
from tests.conftest import ASSETS, requires_assets, tiny_cnn
from tests.helpers import run

pytestmark = pytest.mark.ray
JUDGE_PAYOFF = True  # Ray workers plan sensitivity's models with the real payoff rule (see test_workers)

UNTIMED = ("--prefer", "accuracy")


@pytest.fixture
def by_value() -> None:
    import ray

    # workers do not import tests/: the tasks travel by value
    ray.cloudpickle.register_pickle_by_value(test_workers)


def _sha(*paths: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


def test_a_killed_ray_worker_is_retried_and_nothing_is_lost(tmp_path: Path, by_value: None) -> None:
    with RayPool(os.environ["RAY_ADDRESS"]) as pool:
        assert pool.workers == 2  # the cluster's CPUs
        results = list(pool.run(test_workers.square_unless_marked, str(tmp_path), list(range(6)), str))
    assert results == [k * k for k in range(6)]
    assert (tmp_path / "killed-3").exists()


def test_a_chunk_that_kills_two_ray_workers_is_named(tmp_path: Path, by_value: None) -> None:
    with (
        RayPool(os.environ["RAY_ADDRESS"]) as pool,
        pytest.raises(WorkerError, match=r"^chunk 2 failed 2 times"),
    ):
        list(pool.run(test_workers.always_dies, str(tmp_path), list(range(4)), lambda j: f"chunk {j}"))


def test_ray_gives_the_one_process_table_and_report(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "CHUNK_IMAGES", 4)
    model = tiny_cnn(tmp_path / "cnn.onnx")
    tables: list[str] = []
    reports: list[str] = []
    rankings: list[dict[str, object]] = []
    models: list[str] = []
    for where in (["--workers", "1"], ["--ray", os.environ["RAY_ADDRESS"]]):
        table, report = tmp_path / f"t{len(tables)}.json", tmp_path / f"r{len(tables)}.json"
        code, _, err = run(
            ["calibrate", str(model), "--images", str(image_dir), "-o", str(table), *where], capsys
        )
        assert code == 0, err
        tables.append(_sha(table, table.with_suffix(".npz")))
        argv = ["compare", str(model), str(model), "--images", str(image_dir), "--runs", "0"]
        code, _, err = run([*argv, "--json", str(report), *where], capsys)
        assert code == 0, err
        reports.append(_sha(report))
        ranking = tmp_path / f"s{len(tables)}.json"
        argv = ["sensitivity", str(model), "-c", str(table), "--images", str(image_dir), "--top", "1"]
        code, _, err = run([*argv, "--json", str(ranking), *where], capsys)
        assert code == 0, err
        doc = json.loads(ranking.read_text())
        assert doc.pop("seconds") > 0 and doc["layers"]
        rankings.append(doc)
        budgeted = tmp_path / f"b{len(tables)}.onnx"
        argv = ["convert", str(model), "-c", str(table), "-o", str(budgeted), "--max-drop", "0"]
        argv += ["--validation", str(image_dir), "--validation-images", "12", "--metric", "agreement"]
        code, _, err = run([*argv, *where], capsys)
        assert code == 0, err
        models.append(_sha(budgeted))
    assert tables[0] == tables[1] and reports[0] == reports[1] and rankings[0] == rankings[1]
    assert models[0] == models[1]


@requires_assets()
@pytest.mark.parametrize("name", ["mobilenetv2", "yolox_nano"])
def test_real_models_give_the_same_bytes_on_one_process_two_workers_and_ray(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18's acceptance: calibration table, converted model (its fallback search's trials on the
    pool) and compare JSON identical (sha256) on one process, two local workers and the Ray cluster."""
    model = ASSETS / "models" / f"{name}.onnx"
    images = ASSETS / "images" / "coco-calib"
    pre = ["--preset", "raw", "--bgr", "--resize", "letterbox"] if name == "yolox_nano" else []
    head = ["--detector", "yolox"] if name == "yolox_nano" else []
    pools = (["--workers", "1"], ["--workers", "2"], ["--ray", os.environ["RAY_ADDRESS"]])
    tables = []
    for k, where in enumerate(pools):
        table = tmp_path / f"t{k}.json"
        argv = ["calibrate", str(model), "--images", str(images), "--num-images", "40", "-o", str(table)]
        code, _, err = run([*argv, *pre, *where], capsys)
        assert code == 0, err
        tables.append(_sha(table, table.with_suffix(".npz")))
    assert tables[0] == tables[1] == tables[2]
    converted = []
    for k, where in enumerate(pools):
        out = tmp_path / f"q{k}.onnx"
        code, _, err = run(
            # --prefer accuracy: the speed-aware plan decides by this machine's timing, not by the pool
            ["convert", str(model), "-c", str(tmp_path / "t0.json"), "-o", str(out), *UNTIMED, *where],
            capsys,
        )
        assert code == 0, err
        converted.append(_sha(out))
    assert converted[0] == converted[1] == converted[2]
    int8 = tmp_path / "q0.onnx"
    reports = []
    for where in pools:
        report = tmp_path / "r.json"  # the same path every time: the report records its inputs' paths
        argv = [
            "compare",
            str(model),
            str(int8),
            "--images",
            str(images),
            "--num-images",
            "40",
            "--runs",
            "0",
        ]
        code, _, err = run([*argv, *pre, *head, "--json", str(report), *where], capsys)
        assert code == 0, err
        reports.append(_sha(report))
    assert reports[0] == reports[1] == reports[2]
