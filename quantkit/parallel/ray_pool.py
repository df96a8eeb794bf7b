"""Shards as Ray tasks on an existing cluster (`--ray ADDRESS`, or RAY_ADDRESS; any address ray.init
accepts: "auto", "HOST:PORT", "ray://HOST:PORT").

The shared blob (the model) goes into the cluster's object store once; each task reads it from its node's
store. Ray retries a task whose worker or node dies (max_retries); a task that fails that way twice is
reported with the job it ran. Every node needs the same quantkit version installed, and must be able to
read what the jobs name (image paths: a folder every node sees).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from quantkit.errors import ConfigError, QuantkitError, WorkerError

J = TypeVar("J")
R = TypeVar("R")

ATTEMPTS = 2
INSTALL = "pip install 'ray>=2.40'"  # the `ray` extra's; "quantkit" on PyPI is another project


CONNECT_SECONDS = 10.0  # ray.init itself retries an address nothing listens at for minutes


def _answers(address: str) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) address at which nothing accepts a connection within
    CONNECT_SECONDS: ray.init waited on 127.0.0.1:1 for over 10 minutes, printing 'Failed to connect to
    GCS' every 30 s. "auto" and other forms are left to ray.init."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); check --ray or RAY_ADDRESS, or "
            "start one with `ray start --head`"
        ) from None


class RayPool:
    """Tasks of one CPU each; at most twice the cluster's CPUs in flight, so the driver's memory stays
    bounded however many jobs there are."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(f"--ray needs Ray, which is not installed; install it with {INSTALL}") from None
        self._ray: Any = ray
        self.address = address or os.environ.get("RAY_ADDRESS", "")
        if not self.address:
            raise ConfigError("--ray needs the cluster's address (or RAY_ADDRESS), e.g. --ray 10.0.0.5:6379")
        self.workers = 1  # the cluster's CPUs, once connected
        self._started = False

    def __enter__(self) -> RayPool:
        ray = self._ray
        if not ray.is_initialized():
            _answers(self.address)
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, ValueError, RuntimeError) as exc:
                # hq61: a RAY_ADDRESS left in the environment sends every command here, unasked on its line
                env = (
                    " (RAY_ADDRESS; unset it to run here)"
                    if self.address == os.environ.get("RAY_ADDRESS")
                    else ""
                )
                raise ConfigError(
                    f"cannot reach the Ray cluster at {self.address!r} ({exc}); check the address{env}, or "
                    "start one with `ray start --head`"
                ) from None
            self._started = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def share(self, blobs: Sequence[bytes]) -> Any:
        # one object: Ray hands a task its top-level arguments resolved, arrays zero-copy from the store
        return self._ray.put(tuple(np.frombuffer(blob, np.uint8) for blob in blobs))

    def run(
        self,
        fn: Callable[[Any, J], R],
        shared: Any,
        jobs: Sequence[J],
        describe: Callable[[J], str],
    ) -> Iterator[R]:
        ray = self._ray
        task = ray.remote(num_cpus=1, max_retries=ATTEMPTS - 1, retry_exceptions=False)(fn)
        limit = 2 * self.workers
        submitted: dict[Any, int] = {}
        done: dict[int, R] = {}
        emitted = 0
        following = 0
        while emitted < len(jobs):
            while following < len(jobs) and len(submitted) < limit:
                submitted[task.remote(shared, jobs[following])] = following
                following += 1
            ready, _ = ray.wait(list(submitted), num_returns=1)
            for ref in ready:
                index = submitted.pop(ref)
                done[index] = self._result(ref, describe(jobs[index]))
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1

    def _result(self, ref: Any, what: str) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # fn raised: the same error as in one process
            cause = getattr(exc, "cause", None)
            if isinstance(cause, QuantkitError):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:
            raise WorkerError(
                f"{what} failed {ATTEMPTS} times on the Ray cluster ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); check the nodes' memory and logs"
            ) from None
