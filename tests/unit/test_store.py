"""The MemoryStore contract, run against both backends (SQLite and a real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from serve_app.core.redis_store import RedisMemoryStore
from serve_app.core.sqlite_store import SQLiteMemoryStore
from serve_app.core.store import MemoryPatch, MemoryStore, NewMemory


def vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def mem(text: str, seed: int = 0, tier: str = "long_term", expires_at: float | None = None,
        metadata: dict | None = None) -> NewMemory:  # type: ignore[type-arg]
    return NewMemory(text=text, tier=tier, importance=0.5, embedding=vec(seed), expires_at=expires_at,
                     metadata=metadata or {})


StoreFactory = Callable[[], MemoryStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Returns a factory: each call opens the *same* data set again (a restart)."""
    if request.param == "sqlite":
        return lambda: SQLiteMemoryStore(tmp_path / "m.sqlite3")
    server = request.getfixturevalue("redis_server")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return lambda: RedisMemoryStore(server.url, prefix)


@pytest.fixture
def store(make_store: StoreFactory) -> MemoryStore:
    return make_store()


def test_add_returns_ids_and_increasing_seq(store: MemoryStore) -> None:
    first, seq1 = store.add("alice", 0, [mem("a", 1), mem("b", 2)])
    second, seq2 = store.add("alice", 0, [mem("c", 3)])
    assert len({r.id for r in first + second}) == 3
    assert seq2 > seq1 > 0
    assert store.last_seq(0) == seq2 and store.last_seq() == seq2
    assert store.user_version("alice") == seq2
    assert store.count("alice") == 3


def test_written_data_survives_reopen(make_store: StoreFactory) -> None:
    records, _ = make_store().add("alice", 1, [mem("keep me", 5, metadata={"k": [1, "x"]})])
    reopened = make_store()
    got = reopened.get("alice", records[0].id)
    assert got is not None and got.text == "keep me" and got.metadata == {"k": [1, "x"]}
    keys, vectors, texts = reopened.user_index_data("alice")
    assert list(keys) == [records[0].key] and texts == ["keep me"]
    np.testing.assert_allclose(vectors[0], vec(5))
    assert make_store().store_id == reopened.store_id


def test_users_never_see_each_other(store: MemoryStore) -> None:
    records, _ = store.add("alice", 0, [mem("alice's secret")])
    assert store.get("bob", records[0].id) is None
    assert store.list("bob", None, 10, None) == []
    assert store.get_many("bob", [records[0].key]) == {}
    assert store.delete("bob", 0, [records[0].id]) is None
    assert store.update("bob", 0, [(records[0].id, MemoryPatch(text="stolen"))]) == ([], 0)
    assert store.history("bob", records[0].id) == []
    assert store.get("alice", records[0].id).text == "alice's secret"  # type: ignore[union-attr]


def test_update_logs_and_keeps_history(store: MemoryStore) -> None:
    records, seq = store.add("alice", 0, [mem("likes tea", 1)])
    [updated], useq = store.update(
        "alice", 0, [(records[0].id, MemoryPatch(text="likes green tea", embedding=vec(9), importance=0.9,
                                                 tier="semantic", expires_at=None))], actor="tester",
    )
    assert useq > seq
    assert (updated.text, updated.importance, updated.tier, updated.expires_at) == (
        "likes green tea", 0.9, "semantic", None
    )
    change = store.changes_since(0, seq)[0]
    assert change.op == "upsert" and change.key == records[0].key and change.text == "likes green tea"
    np.testing.assert_allclose(change.embedding, vec(9))  # type: ignore[arg-type]
    history = store.history("alice", records[0].id)
    assert [(h.event, h.old_text, h.new_text) for h in history] == [
        ("ADD", None, "likes tea"), ("UPDATE", "likes tea", "likes green tea")]
    assert history[1].actor == "tester" and history[1].new_tier == "semantic" and history[1].seq == useq


def test_delete_logs_a_change_and_removes_record(store: MemoryStore) -> None:
    records, seq = store.add("alice", 1, [mem("x", 1)])
    del_seq = store.delete("alice", 1, [records[0].id])
    assert del_seq is not None and del_seq > seq
    assert store.get("alice", records[0].id) is None and store.count("alice") == 0
    changes = store.changes_since(1, 0)
    assert [(c.op, c.key) for c in changes] == [("upsert", records[0].key), ("delete", records[0].key)]
    assert changes[0].embedding is None and changes[0].text is None  # the row is gone
    assert [h.event for h in store.history("alice", records[0].id)] == ["ADD", "DELETE"]
    assert store.delete("alice", 1, [records[0].id]) is None


def test_forget_user_removes_every_trace(store: MemoryStore) -> None:
    records, _ = store.add("alice", 0, [mem("a", 1), mem("b", 2)])
    store.delete("alice", 0, [records[0].id])
    store.add("bob", 0, [mem("bob's", 3)])
    seq = store.forget_user("alice", 0)
    assert store.count("alice") == 0 and store.list("alice", None, 10, None) == []
    assert store.history("alice", records[1].id) == [] and store.history("alice", records[0].id) == []
    assert "alice" not in store.users() and "bob" in store.users()
    assert [(c.op, c.user) for c in store.changes_since(0, 0) if c.user == "alice"] == [("forget", "alice")]
    assert store.user_version("alice") == seq
    assert store.count("bob") == 1


def test_change_log_is_per_shard_and_per_user(store: MemoryStore) -> None:
    _, s1 = store.add("a", 0, [mem("on shard 0")])
    store.add("b", 1, [mem("on shard 1")])
    _, s3 = store.add("a", 0, [mem("again")])
    assert [c.user for c in store.changes_since(0, 0)] == ["a", "a"]
    assert [c.user for c in store.changes_since(1, 0)] == ["b"]
    assert store.changes_since(0, store.last_seq(0)) == []
    assert [c.seq for c in store.changes_since(0, 0, limit=1)] == [s1]
    assert [c.seq for c in store.user_changes_since("a", s1)] == [s3]


def test_list_pages_and_filters_by_tier(store: MemoryStore) -> None:
    store.add("alice", 0, [mem(f"m{i}", i, tier="working" if i % 2 else "semantic") for i in range(5)])
    page1 = store.list("alice", None, 2, None)
    page2 = store.list("alice", None, 2, page1[-1].key)
    assert [r.text for r in page1 + page2] == ["m0", "m1", "m2", "m3"]
    assert [r.text for r in store.list("alice", "working", 10, None)] == ["m1", "m3"]
    assert [r.text for r in store.all_records("alice")] == [f"m{i}" for i in range(5)]


def test_record_access_counts_without_logging(store: MemoryStore) -> None:
    records, seq = store.add("alice", 0, [mem("x")])
    store.record_access("alice", [records[0].key], now=123.0)
    store.record_access("mallory", [records[0].key], now=999.0)  # not theirs: ignored
    got = store.get("alice", records[0].id)
    assert got is not None and got.access_count == 1 and got.last_accessed == 123.0
    assert store.last_seq() == seq


def test_batch_update_is_one_commit_and_counts_tiers(store: MemoryStore) -> None:
    records, _ = store.add("alice", 0, [mem(f"m{i}", i, tier="working", expires_at=1e12) for i in range(5)])
    patches = [(r.id, MemoryPatch(tier="short_term", expires_at=2e12)) for r in records[:3]]
    updated, seq = store.update("alice", 0, [*patches, ("mem-unknown", MemoryPatch(text="x"))], event="PROMOTE")
    assert [u.id for u in updated] == [r.id for r in records[:3]]
    assert all(u.tier == "short_term" and u.expires_at == 2e12 for u in updated)
    assert store.tier_counts("alice") == {"working": 2, "short_term": 3}
    assert store.history("alice", records[0].id)[-1].event == "PROMOTE"
    assert seq == store.last_seq()


def test_a_hung_redis_fails_a_call_within_the_timeout_as_a_retryable_503(tmp_path: Path) -> None:
    """A redis-server that stops answering (SIGSTOP: the socket stays open, nothing replies)
    must not hang the request waiting on it: the call fails after `redis_timeout_s`, the
    caller is told 503 `unavailable`, and the store works again once Redis does."""
    import os
    import signal
    import time

    from serve_app.errors import to_error
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "hung").start()
    assert server.process is not None
    try:
        store = RedisMemoryStore(server.url, "hung", timeout_s=0.5)
        store.add("alice", 0, [mem("before the hang")])
        os.kill(server.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            store.add("alice", 0, [mem("during the hang", seed=1)])
        assert time.monotonic() - started < 3
        error = to_error(caught.value)
        assert (error.status, error.code, error.retry_after_s is not None) == (503, "unavailable", True)
        os.kill(server.process.pid, signal.SIGCONT)
        store.add("alice", 0, [mem("after the hang", seed=2)])  # "during" may have landed too: it was sent
        texts = {r.text for r in store.all_records("alice")}
        assert {"before the hang", "after the hang"} <= texts
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()
