"""SQLiteMemoryStore: commits, change log, isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serve_app.core.store import NewMemory, SQLiteMemoryStore


def vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def mem(text: str, seed: int = 0, tier: str = "long_term", expires_at: float | None = None) -> NewMemory:
    return NewMemory(text=text, tier=tier, importance=0.5, embedding=vec(seed), expires_at=expires_at)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteMemoryStore:
    return SQLiteMemoryStore(tmp_path / "m.sqlite3")


def test_add_returns_ids_and_increasing_seq(store: SQLiteMemoryStore) -> None:
    first, seq1 = store.add("alice", 0, [mem("a", 1), mem("b", 2)])
    second, seq2 = store.add("alice", 0, [mem("c", 3)])
    assert len(first) == 2 and len(second) == 1
    assert len({r.id for r in first + second}) == 3
    assert seq2 > seq1 > 0
    assert store.last_seq(0) == seq2
    assert store.user_version("alice") == seq2


def test_written_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    records, _ = SQLiteMemoryStore(path).add("alice", 1, [mem("keep me", 5)])
    reopened = SQLiteMemoryStore(path)
    got = reopened.get("alice", records[0].id)
    assert got is not None and got.text == "keep me"
    keys, vectors = reopened.user_embeddings("alice")
    assert list(keys) == [records[0].key]
    np.testing.assert_allclose(vectors[0], vec(5))


def test_users_never_see_each_other(store: SQLiteMemoryStore) -> None:
    records, _ = store.add("alice", 0, [mem("alice's secret")])
    assert store.get("bob", records[0].id) is None
    assert store.list("bob", None, 10, None) == []
    assert store.get_many("bob", [records[0].key]) == {}
    assert store.delete("bob", 0, records[0].id) is None
    assert store.get("alice", records[0].id) is not None


def test_delete_logs_a_change_and_removes_record(store: SQLiteMemoryStore) -> None:
    records, seq = store.add("alice", 1, [mem("x", 1)])
    del_seq = store.delete("alice", 1, records[0].id)
    assert del_seq is not None and del_seq > seq
    assert store.get("alice", records[0].id) is None
    changes = store.changes_since(1, 0)
    assert [(c.op, c.key) for c in changes] == [("upsert", records[0].key), ("delete", records[0].key)]
    # The upsert's row is gone: the log hands out no embedding for it any more.
    assert changes[0].embedding is None


def test_change_log_is_per_shard(store: SQLiteMemoryStore) -> None:
    store.add("a", 0, [mem("on shard 0")])
    store.add("b", 1, [mem("on shard 1")])
    assert [c.user for c in store.changes_since(0, 0)] == ["a"]
    assert [c.user for c in store.changes_since(1, 0)] == ["b"]
    assert store.changes_since(0, store.last_seq(0)) == []


def test_list_pages_and_filters_by_tier(store: SQLiteMemoryStore) -> None:
    store.add("alice", 0, [mem(f"m{i}", i, tier="working" if i % 2 else "semantic") for i in range(5)])
    page1 = store.list("alice", None, 2, None)
    page2 = store.list("alice", None, 2, page1[-1].key)
    assert [r.text for r in page1 + page2] == ["m0", "m1", "m2", "m3"]
    assert [r.text for r in store.list("alice", "working", 10, None)] == ["m1", "m3"]


def test_record_access_counts(store: SQLiteMemoryStore) -> None:
    records, seq = store.add("alice", 0, [mem("x")])
    store.record_access("alice", [records[0].key], now=123.0)
    got = store.get("alice", records[0].id)
    assert got is not None and got.access_count == 1 and got.last_accessed == 123.0
    assert store.last_seq() == seq  # access statistics are not logged changes
