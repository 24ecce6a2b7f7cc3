"""ShardIndex: per-user FAISS indexes kept in step with the store's change log."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np

from serve_app.core.index import ShardIndex
from serve_app.core.lexical import BM25Index
from serve_app.core.retrieval import SearchFilters, search_user_memories
from serve_app.core.scoring import ScoringSettings
from serve_app.core.sharding import shard_for
from serve_app.core.sqlite_store import SQLiteMemoryStore
from tests.unit.test_store import mem, vec


def test_shard_for_is_stable_and_spreads() -> None:
    assert shard_for("alice", 4) == shard_for("alice", 4)
    assert shard_for("alice", 4) == 1  # fixed across processes and releases
    shards = {shard_for(f"user-{i}", 4) for i in range(100)}
    assert shards == {0, 1, 2, 3}


def test_search_finds_own_memories_only(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.sqlite3")
    store.add("alice", 0, [mem("alice one", 1), mem("alice two", 2)])
    store.add("bob", 0, [mem("bob one", 1)])  # same vector as alice's first memory
    index = ShardIndex(store, 0, dim=8, max_loaded_users=10)
    alice = search_user_memories(index, "alice", vec(1), k=5, now=0.0)
    assert alice[0].record.text == "alice one"
    assert {m.record.user for m in alice} == {"alice"}
    bob = search_user_memories(index, "bob", vec(1), k=5, now=0.0)
    assert [m.record.text for m in bob] == ["bob one"]


def test_replica_applies_writes_made_elsewhere(tmp_path: Path) -> None:
    """Two replicas of a shard over one store: a write through either is seen by both."""
    path = tmp_path / "m.sqlite3"
    writer = SQLiteMemoryStore(path)
    replica_a = ShardIndex(SQLiteMemoryStore(path), 0, 8, 10)
    replica_b = ShardIndex(SQLiteMemoryStore(path), 0, 8, 10)
    assert replica_a.search("alice", vec(7), 3) == []
    assert replica_b.search("alice", vec(7), 3) == []
    records, seq = writer.add("alice", 0, [mem("new", 7)])
    for replica in (replica_a, replica_b):
        hits = replica.search("alice", vec(7), 3)
        assert [h.key for h in hits] == [records[0].key]
        assert replica.applied_seq >= seq
    writer.delete("alice", 0, [records[0].id])
    assert replica_a.search("alice", vec(7), 3) == []
    assert replica_b.search("alice", vec(7), 3) == []


def test_evicted_user_is_rebuilt_from_store(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.sqlite3")
    index = ShardIndex(store, 0, 8, max_loaded_users=1)
    store.add("alice", 0, [mem("a", 1)])
    store.add("bob", 0, [mem("b", 2)])
    assert len(index.search("alice", vec(1), 1)) == 1
    assert len(index.search("bob", vec(2), 1)) == 1  # evicts alice
    assert index.loaded_users == 1
    store.add("alice", 0, [mem("a2", 3)])  # logged while alice is not loaded
    hits = index.search("alice", vec(3), 2)
    assert len(hits) == 2 and hits[0].similarity > 0.99


def test_filters_expired_and_tiers(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.sqlite3")
    store.add("alice", 0, [mem("old", 1, expires_at=50.0), mem("work", 2, tier="working"), mem("fact", 3)])
    index = ShardIndex(store, 0, 8, 10)
    now_texts = [m.record.text for m in search_user_memories(index, "alice", vec(1), 5, now=100.0)]
    assert "old" not in now_texts and set(now_texts) == {"work", "fact"}
    working = search_user_memories(index, "alice", vec(1), 5, now=0.0, filters=SearchFilters(tiers=["working"]))
    assert [m.record.text for m in working] == ["work"]
    strict = search_user_memories(index, "alice", vec(1), 5, now=0.0, filters=SearchFilters(min_similarity=0.99))
    assert [m.record.text for m in strict] == ["old"]


def test_hybrid_search_finds_exact_names_dense_misses(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.sqlite3")
    # The named memory's vector points away from the query; only BM25 can find it.
    records, _ = store.add("alice", 0, [mem("my neighbour Zebulon fixes bikes", 40)] +
                           [mem(f"filler memory {i}", i) for i in range(30)])
    index = ShardIndex(store, 0, 8, 10)
    dense_only = search_user_memories(index, "alice", vec(1), 3, now=0.0)
    assert records[0].id not in [m.record.id for m in dense_only]
    hybrid = search_user_memories(index, "alice", vec(1), 3, now=0.0, query_text="who is Zebulon?")
    assert records[0].id in [m.record.id for m in hybrid]


def test_metadata_and_time_filters(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.sqlite3")
    store.add("alice", 0, [mem("a", 1, metadata={"topic": "food"}), mem("b", 2, metadata={"topic": "work"})])
    index = ShardIndex(store, 0, 8, 10)
    food = search_user_memories(index, "alice", vec(2), 5, 0.0, filters=SearchFilters(metadata={"topic": "food"}))
    assert [m.record.text for m in food] == ["a"]
    future = search_user_memories(index, "alice", vec(2), 5, 0.0, filters=SearchFilters(created_after=2e9))
    assert future == []
    past = search_user_memories(index, "alice", vec(2), 5, 0.0, filters=SearchFilters(created_before=2e9))
    assert len(past) == 2


def test_a_restated_memory_ranks_first_by_default(tmp_path: Path) -> None:
    """A search that restates a memory finds that memory first (the write-then-search race
    test in tests/integration relies on it). RM3 feedback breaks that on a small collection:
    with few memories its "rare" expansion terms are other memories' own words, so it ranks
    them above the restated one. That is why `lexical_feedback` is off by default."""
    people = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ivo", "Jun"]
    habits = ["plays the cello on Mondays", "grows tomatoes on Tuesdays", "repairs old clocks on Thursdays",
              "swims in cold lakes on Sundays"]
    store = SQLiteMemoryStore(tmp_path / "m.sqlite3")
    index = ShardIndex(store, 0, 8, 10)
    scoring = ScoringSettings()
    lexical, expanded_misses = BM25Index(), 0  # the same texts in a bare BM25 index
    pairs = [(p, h) for p in range(len(people)) for h in range(len(habits))]
    random.Random(0).shuffle(pairs)  # concurrent writers: in no particular order
    for p, h in pairs:  # written one by one, each searched right after its write
        vector = vec(100 + p) + 2 * vec(200 + h)  # facts that share a habit are close
        fact = dataclasses.replace(mem(f"{people[p]} {habits[h]}."), embedding=vector / np.linalg.norm(vector))
        (record,), _ = store.add("alice", 0, [fact])
        top = search_user_memories(index, "alice", fact.embedding, 1, now=0.0, query_text=fact.text,
                                   scoring=scoring)
        assert top[0].record.id == record.id, fact.text
        key = len(lexical)
        lexical.upsert(key, fact.text)
        expanded = lexical.feedback_search(fact.text, 4)
        expanded_misses += expanded[0][0] != key
    assert expanded_misses > 0  # RM3's ranking put another fact first
