"""The Ray cluster CI runs the `ray` tests on (.ci/ray_cluster): two nodes, loopback only, and the retry of
a task whose worker process dies, the mechanism quantkit's --ray relies on. Skipped unless RAY_ADDRESS
names a cluster (tests/conftest.py)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ray

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def ray() -> Iterator[Any]:
    import ray

    # The workers import nothing from tests/: this module's tasks travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=os.environ["RAY_ADDRESS"], _node_ip_address=LOOPBACK, log_to_driver=False)
    yield ray
    ray.shutdown()


def _alive(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n["Alive"]]


def test_two_alive_nodes_on_loopback(ray: Any) -> None:
    nodes = _alive(ray)
    assert len(nodes) == 2
    assert {n["NodeManagerAddress"] for n in nodes} == {LOOPBACK}
    assert all(n["Resources"].get("CPU") == 1 for n in nodes)


def test_resources_name_loopback_and_nothing_else(ray: Any) -> None:
    resources = ray.cluster_resources()
    addresses = {k for k in resources if k.startswith("node:") and k != "node:__internal_head__"}
    assert addresses == {f"node:{LOOPBACK}"}
    assert resources[f"node:{LOOPBACK}"] == 2  # one per node
    assert resources["CPU"] == 2


def test_a_task_runs_on_each_node(ray: Any) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    def where() -> tuple[str, int]:
        return ray.get_runtime_context().get_node_id(), os.getpid()

    ids = [n["NodeID"] for n in _alive(ray)]
    refs = [
        where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        for node in ids
    ]
    ran = ray.get(refs, timeout=120)
    assert [node for node, _ in ran] == ids
    assert len({pid for _, pid in ran}) == 2  # two worker processes, one per raylet


def _unreachable(kind: int) -> int:
    """The errno of connecting a socket of this kind to a public address (0: it connected)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(5)
        try:
            s.connect(("8.8.8.8", 53))
        except OSError as exc:
            return exc.errno or -1
    return 0


def test_nothing_but_loopback_is_reachable(ray: Any) -> None:
    assert [name for _, name in socket.if_nameindex()] == ["lo"]  # this namespace's interfaces
    assert _unreachable(socket.SOCK_DGRAM) == errno.ENETUNREACH
    assert _unreachable(socket.SOCK_STREAM) == errno.ENETUNREACH
    # the workers too
    check = ray.remote(num_cpus=1)(_unreachable)
    codes = ray.get([check.remote(socket.SOCK_DGRAM), check.remote(socket.SOCK_STREAM)], timeout=120)
    assert codes == [errno.ENETUNREACH, errno.ENETUNREACH]


def _die_once(marker: str) -> list[int]:
    """Record this attempt's pid; on the first attempt, kill this worker process outright."""
    path = Path(marker)
    with path.open("a") as f:
        f.write(f"{os.getpid()}\n")
    attempts = [int(line) for line in path.read_text().split()]
    if len(attempts) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return attempts


def test_a_task_whose_worker_is_killed_is_retried(ray: Any, tmp_path: Path) -> None:
    task = ray.remote(num_cpus=1, max_retries=2)(_die_once)
    attempts = ray.get(task.remote(str(tmp_path / "attempts")), timeout=120)
    assert len(attempts) == 2 and attempts[0] != attempts[1]  # a second process ran it


def test_without_retries_the_killed_worker_is_an_error(ray: Any, tmp_path: Path) -> None:
    from ray.exceptions import WorkerCrashedError

    task = ray.remote(num_cpus=1, max_retries=0)(_die_once)
    with pytest.raises(WorkerCrashedError):
        ray.get(task.remote(str(tmp_path / "attempts")), timeout=120)
    assert len((tmp_path / "attempts").read_text().split()) == 1
