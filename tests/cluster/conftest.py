"""One real multi-node Ray cluster for the tests of this package, started the way
`make cluster` starts it (scripts/cluster.py): a Ray head and a second Ray node (`ray start`
processes, each with its own raylet, object store and worker processes), a real
redis-server (tests/redis_server.py: AOF, fsync always) and `serve deploy` of
configs/cluster.yaml: real vLLM CPU engine, real MiniLM, real FAISS.

The cluster is package-scoped: it starts at the first test here that needs it and is torn
down after the last one, before pytest moves on (tests/cluster sorts before
tests/integration, whose session-scoped `serve run` apps start only after this teardown),
so two engines never share the 2 cores. Every fault test measures how long the app took to
serve again; the numbers are printed at the end of the run.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.cluster import HEAD_IP, REPO, LocalCluster, free_port
from tests.redis_server import RedisServer

STARTUP_TIMEOUT_S = float(os.environ.get("MEMSERVE_TEST_STARTUP_S", "900"))
MEASURED: dict[str, str] = {}  # what the fault tests measured, for the run's summary

logger = logging.getLogger("tests.cluster")


def measured(name: str, value: str) -> None:
    MEASURED[name] = value
    print(f"[cluster] {name}: {value}", flush=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.section("memserve multi-node cluster: measured")
        for name, value in MEASURED.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="package")
def cluster_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The cluster's own redis-server (the fault tests stop and restart it)."""
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("cluster-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def cluster(cluster_redis: RedisServer) -> Iterator[LocalCluster]:
    # Short: Ray's unix sockets live under it (at most 107 bytes a path).
    root = Path(tempfile.mkdtemp(prefix="msc-", dir="/tmp"))
    started = time.monotonic()
    instance = LocalCluster(
        root, http_port=free_port(), redis_url=cluster_redis.url.rsplit("/", 1)[0],
        env={"MEMSERVE_API_KEYS": None, "MEMSERVE_TENANT_KEYS": None},  # an open app
    )
    try:
        instance.up(STARTUP_TIMEOUT_S)
        measured("cluster up (2 Ray nodes, serve deploy, app ready)", f"{time.monotonic() - started:.0f} s")
        yield instance
    finally:
        instance.down()
        if os.environ.get("MEMSERVE_KEEP_CLUSTER_LOGS"):
            print(f"[cluster] logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


class Killer:
    """tests/cluster/killer.py, running: `ray.kill`s replica actors by name."""

    def __init__(self, cluster: LocalCluster) -> None:
        env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster.killer", cluster.gcs_address, HEAD_IP], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._expect("ready", 120)

    def _expect(self, word: str, timeout_s: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith(word):
            raise RuntimeError(f"the Ray driver that kills replicas did not answer {word!r}: {line!r}")
        return line

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def resolve(self, actor_names: list[str]) -> None:
        self._send("resolve " + " ".join(actor_names))
        self._expect("resolved", 60)

    def kill(self) -> float:
        """Kill the resolved actors; the monotonic time (system-wide) right after."""
        self._send("kill")
        return float(self._expect("killed", 60).split()[1])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="package")
def killer(cluster: LocalCluster) -> Iterator[Killer]:
    instance = Killer(cluster)
    try:
        yield instance
    finally:
        instance.close()
