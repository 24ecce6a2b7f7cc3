"""Faults on the real backends: kill -9 mid-write, damaged snapshots, racing replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from serve_app.core.index import ShardIndex
from serve_app.core.redis_store import RedisMemoryStore
from serve_app.core.sqlite_store import SQLiteMemoryStore
from serve_app.core.store import MemoryStore, NewMemory
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]


def start_writer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.faults.writer", *args], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def read_acks(process: subprocess.Popen[str], until: int) -> list[str]:
    acks = []
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("ACK "):
            acks.append(line.split()[1])
            if len(acks) >= until:
                break
    return acks


def test_sqlite_kill_9_writer_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    writer = start_writer("sqlite", str(path))
    acks = read_acks(writer, until=200)
    writer.send_signal(signal.SIGKILL)  # mid-loop: a write is very likely in flight
    rest, _ = writer.communicate()
    acks += [line.split()[1] for line in rest.splitlines() if line.startswith("ACK ")]
    store = SQLiteMemoryStore(path)
    present = {r.id for r in store.all_records("writer")}
    assert len(acks) >= 200 and set(acks) <= present
    assert store.count("writer") in (len(acks), len(acks) + 1)  # +1: committed, not yet printed


def test_redis_kill_9_server_loses_no_acknowledged_write(tmp_path: Path) -> None:
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis").start()
    prefix = f"k{uuid.uuid4().hex[:6]}"
    writer = start_writer("redis", server.url, prefix)
    acks = read_acks(writer, until=200)
    server.kill()  # SIGKILL the process that holds the data
    rest, _ = writer.communicate(timeout=30)
    acks += [line.split()[1] for line in rest.splitlines() if line.startswith("ACK ")]
    assert "ERROR" in rest  # the writer saw the store die
    server.start()  # same directory: Redis replays its append-only file
    store = RedisMemoryStore(server.url, prefix)
    present = {r.id for r in store.all_records("writer")}
    server.stop()
    assert len(acks) >= 200 and set(acks) <= present


def vec(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A factory of independent connections to one data set (one per replica)."""
    if request.param == "sqlite":
        return lambda: SQLiteMemoryStore(tmp_path / "m.sqlite3")
    server = request.getfixturevalue("redis_server")
    prefix = f"r{uuid.uuid4().hex[:6]}"
    return lambda: RedisMemoryStore(server.url, prefix)


def test_two_replicas_never_miss_an_acknowledged_write(shared_store) -> None:  # type: ignore[no-untyped-def]
    """Writers and two replicas of one shard race; every search that asks for a write it
    was told about (after the ack) finds it, on either replica."""
    replicas = [ShardIndex(shared_store(), 0, 8, 10), ShardIndex(shared_store(), 0, 8, 10)]
    locks = [threading.Lock(), threading.Lock()]  # a replica serves one search at a time
    misses: list[str] = []
    checked = [0]

    def writer(n: int, seed: int) -> None:
        store: MemoryStore = shared_store()
        rng = np.random.default_rng(seed)
        for i in range(n):
            v = vec(rng)
            records, _ = store.add("alice", 0, [NewMemory(text=f"w{seed}-{i}", tier="long_term", importance=0.5,
                                                          embedding=v)])
            r = i % 2
            with locks[r]:
                hits = replicas[r].search("alice", v, 1)
            checked[0] += 1
            if not hits or hits[0].similarity < 0.999:
                misses.append(records[0].id)

    threads = [threading.Thread(target=writer, args=(60, seed)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert checked[0] == 180 and misses == []
    for replica in replicas:
        replica.catch_up()
    assert len(replicas[0].user("alice")) == len(replicas[1].user("alice")) == 180


def test_snapshot_damage_on_both_backends(shared_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = shared_store()
    rng = np.random.default_rng(1)
    store.add("alice", 0, [NewMemory(text=f"m{i}", tier="long_term", importance=0.5, embedding=vec(rng))
                           for i in range(50)])
    snapshots = tmp_path / "snaps"
    query = vec(rng)
    first = ShardIndex(store, 0, 8, 10, snapshots)
    before = first.search("alice", query, 10)
    first.flush()
    for snap in snapshots.glob("*.snap"):
        snap.write_bytes(snap.read_bytes()[:-7] + b"corrupt")
    assert ShardIndex(shared_store(), 0, 8, 10, snapshots).search("alice", query, 10) == before
    for snap in snapshots.glob("*.snap"):
        snap.unlink()
    assert ShardIndex(shared_store(), 0, 8, 10, snapshots).search("alice", query, 10) == before
