"""Index snapshots: trusted only when intact; a shard restart returns identical results."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.core.index import ShardIndex
from serve_app.core.retrieval import search_user_memories
from serve_app.core.snapshot import snapshot_path
from serve_app.core.sqlite_store import SQLiteMemoryStore
from tests.unit.test_store import mem, vec


def results(index: ShardIndex, user: str) -> list[tuple[str, float]]:
    found = search_user_memories(index, user, vec(3), 5, 0.0, query_text="memory 3")
    return [(m.record.id, round(m.score, 6)) for m in found]


@pytest.fixture
def populated(tmp_path: Path) -> tuple[SQLiteMemoryStore, Path]:
    store = SQLiteMemoryStore(tmp_path / "m.sqlite3")
    store.add("alice", 0, [mem(f"memory {i}", i) for i in range(20)])
    return store, tmp_path / "snapshots"


def restart(store: SQLiteMemoryStore, snapshots: Path) -> ShardIndex:
    return ShardIndex(store, 0, 8, 10, snapshots)


def test_snapshot_round_trip_then_log_replay(populated: tuple[SQLiteMemoryStore, Path]) -> None:
    store, snapshots = populated
    first = restart(store, snapshots)
    results(first, "alice")
    assert first.flush() == 1 and snapshot_path(snapshots, "alice").exists()
    # Written and deleted after the snapshot: a restart must replay both from the log.
    late, _ = store.add("alice", 0, [mem("memory 3 again", 3)])
    gone = store.all_records("alice")[0]
    store.delete("alice", 0, [gone.id])
    from_snapshot = results(restart(store, snapshots), "alice")
    from_store = results(ShardIndex(store, 0, 8, 10, None), "alice")
    assert from_snapshot == from_store
    assert late[0].id in [r[0] for r in from_snapshot] and gone.id not in [r[0] for r in from_snapshot]


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip", "garbage"])
def test_damaged_or_missing_snapshot_is_rebuilt(populated: tuple[SQLiteMemoryStore, Path], damage: str) -> None:
    store, snapshots = populated
    first = restart(store, snapshots)
    before = results(first, "alice")
    first.flush()
    path = snapshot_path(snapshots, "alice")
    data = path.read_bytes()
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        path.write_bytes(b"\x00" * 100)
    assert results(restart(store, snapshots), "alice") == before


def test_snapshot_of_another_data_set_is_ignored(tmp_path: Path, populated: tuple[SQLiteMemoryStore, Path]) -> None:
    store, snapshots = populated
    restart(store, snapshots).search("alice", vec(1), 5)
    restart(store, snapshots).flush()
    other = SQLiteMemoryStore(tmp_path / "other.sqlite3")  # a fresh store: alice has nothing there
    assert restart(other, snapshots).search("alice", vec(3), 5) == []


def test_eviction_writes_a_snapshot(populated: tuple[SQLiteMemoryStore, Path]) -> None:
    store, snapshots = populated
    store.add("bob", 0, [mem("bob", 1)])
    index = ShardIndex(store, 0, 8, max_loaded_users=1, snapshot_dir=snapshots)
    index.search("alice", vec(1), 1)
    index.search("bob", vec(1), 1)  # evicts alice, whose fresh index is saved
    assert snapshot_path(snapshots, "alice").exists()


def test_forget_drops_index_and_snapshot(populated: tuple[SQLiteMemoryStore, Path]) -> None:
    store, snapshots = populated
    index = restart(store, snapshots)
    index.search("alice", vec(1), 5)
    index.flush()
    store.forget_user("alice", 0)
    assert index.search("alice", vec(1), 5) == []
    assert not snapshot_path(snapshots, "alice").exists()
    # A replica that was down during the forget and kept a stale snapshot still honours it.
    index2 = restart(store, snapshots)
    assert index2.search("alice", vec(1), 5) == []
