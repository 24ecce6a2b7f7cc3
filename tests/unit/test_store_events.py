"""Event time, sessions, index texts and connections in the MemoryStore contract, on both
backends (SQLite and a real Redis), and the migration of a database written before them."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from serve_app.core.index import ShardIndex
from serve_app.core.sqlite_store import SQLiteMemoryStore
from serve_app.core.store import MemoryPatch, MemoryStore, NewMemory
from tests.unit.test_store import StoreFactory, make_store, mem, store, vec  # noqa: F401 (fixtures)

MAY_8_2023 = 1683554160.0  # 2023-05-08T13:56:00Z


def turn(text: str, session: str | None, seed: int = 0, occurred_at: float | None = MAY_8_2023,
         related: tuple[int, ...] = (), related_items: tuple[int, ...] = ()) -> NewMemory:
    return NewMemory(text=text, tier="long_term", importance=0.5, embedding=vec(seed), occurred_at=occurred_at,
                     session=session, index_text=f"[8 May 2023] {text}" if session else None, related=related,
                     related_items=related_items)


def test_occurred_at_round_trips_apart_from_created_at(make_store: StoreFactory) -> None:
    store = make_store()
    before = time.time()
    records, _ = store.add("alice", 0, [turn("Caroline: I went to a support group", "s1"), mem("no event time")])
    assert records[0].occurred_at == MAY_8_2023 and records[0].created_at >= before
    assert records[1].occurred_at == records[1].created_at  # default: when it is written
    reopened = make_store()
    got = reopened.get("alice", records[0].id)
    assert got is not None and got.occurred_at == MAY_8_2023 and got.session == "s1"
    assert got.created_at == records[0].created_at and got.event_time == MAY_8_2023
    assert [r.occurred_at for r in reopened.list("alice", None, 10, None)] == [MAY_8_2023, records[1].created_at]
    assert reopened.get_many("alice", [records[0].key])[records[0].key].occurred_at == MAY_8_2023
    [patched], _ = reopened.update("alice", 0, [(records[0].id, MemoryPatch(occurred_at=MAY_8_2023 - 86400))])
    assert patched.occurred_at == MAY_8_2023 - 86400 and patched.text == records[0].text
    history = reopened.history("alice", records[0].id)
    assert [(h.event, h.occurred_at) for h in history] == [("ADD", MAY_8_2023), ("UPDATE", MAY_8_2023 - 86400)]
    reopened.delete("alice", 0, [records[0].id])
    assert reopened.history("alice", records[0].id)[-1].occurred_at == MAY_8_2023 - 86400


def test_index_text_is_what_the_index_reads_and_text_what_is_returned(store: MemoryStore) -> None:
    records, seq = store.add("alice", 0, [turn("Melanie: Yes, last Tuesday!", "s1"), mem("plain")])
    _, _, texts = store.user_index_data("alice")
    assert texts == ["[8 May 2023] Melanie: Yes, last Tuesday!", "plain"]
    assert [c.text for c in store.changes_since(0, 0)] == texts
    assert store.get("alice", records[0].id).text == "Melanie: Yes, last Tuesday!"  # type: ignore[union-attr]
    # New text comes with its own index text (None: the text itself).
    store.update("alice", 0, [(records[0].id, MemoryPatch(text="Melanie: No.", embedding=vec(3),
                                                          index_text="[8 May 2023] Melanie: No."))])
    store.update("alice", 0, [(records[1].id, MemoryPatch(text="plainer", embedding=vec(4)))])
    assert store.user_index_data("alice")[2] == ["[8 May 2023] Melanie: No.", "plainer"]
    assert [c.text for c in store.changes_since(0, seq)] == ["[8 May 2023] Melanie: No.", "plainer"]


def test_session_turns_and_related_memories_are_connected(store: MemoryStore) -> None:
    first, _ = store.add("alice", 0, [turn("A: hi", "s1", 1), turn("B: hello", "s1", 2), turn("A: bye", "s1", 3)])
    assert store.session_turn_before("alice", "s1", None).text == "A: bye"  # type: ignore[union-attr]
    assert store.session_turn_before("alice", "s1", first[1].key).text == "A: hi"  # type: ignore[union-attr]
    assert store.session_turn_before("alice", "s1", first[0].key) is None
    assert store.session_turn_before("alice", "other", None) is None
    # A new memory related to an existing one and to an earlier item of its own write.
    later, _ = store.add("alice", 0, [turn("A: hello again", "s2", 4, related=(first[1].key,)),
                                      turn("note", None, 5, related_items=(0,))])
    a, b, c = (r.key for r in first)
    d, e = (r.key for r in later)
    links = store.connections("alice", [a, b, c, d, e])
    assert links[a] == [(b, "session")]
    assert links[b] == [(a, "session"), (c, "session"), (d, "related")]
    assert links[c] == [(b, "session")]
    assert links[d] == [(b, "related"), (e, "related")]
    assert links[e] == [(d, "related")]
    # Deleting a memory removes it from its session and its links; the neighbours close up.
    store.delete("alice", 0, [first[1].id])
    links = store.connections("alice", [a, c, d])
    assert links[a] == [(c, "session")] and links[c] == [(a, "session")] and links[d] == [(e, "related")]


def test_connections_never_cross_users(store: MemoryStore) -> None:
    alice, _ = store.add("alice", 0, [turn("A: one", "shared-id", 1), turn("A: two", "shared-id", 2)])
    # Bob uses the same session id and names Alice's keys as related: none of it connects.
    bob, _ = store.add("bob", 0, [turn("B: one", "shared-id", 3, related=(alice[0].key, alice[1].key))])
    assert store.session_turn_before("bob", "shared-id", None).text == "B: one"  # type: ignore[union-attr]
    assert store.connections("bob", [bob[0].key]) == {bob[0].key: []}
    assert store.connections("bob", [alice[0].key]) == {}
    assert store.connections("alice", [alice[0].key]) == {alice[0].key: [(alice[1].key, "session")]}
    # A user id and session id that concatenate alike stay apart ("a:b" + "c" vs "a" + "b:c").
    store.add("a:b", 0, [turn("x", "c", 4)])
    assert store.session_turn_before("a", "b:c", None) is None
    store.forget_user("alice", 0)
    assert store.session_turn_before("alice", "shared-id", None) is None
    assert store.connections("bob", [bob[0].key]) == {bob[0].key: []}


# The schema of the first release: no occurred_at, session, index_text, history.occurred_at, links.
OLD_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE memories (
    key INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user TEXT NOT NULL, shard INTEGER NOT NULL,
    text TEXT NOT NULL, tier TEXT NOT NULL, importance REAL NOT NULL, metadata TEXT NOT NULL, embedding BLOB NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL, access_count INTEGER NOT NULL DEFAULT 0,
    last_accessed REAL);
CREATE INDEX memories_user ON memories(user, key);
CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, shard INTEGER NOT NULL, user TEXT NOT NULL,
    op TEXT NOT NULL, key INTEGER NOT NULL, ts REAL NOT NULL);
CREATE TABLE history (hid INTEGER PRIMARY KEY AUTOINCREMENT, memory_id TEXT NOT NULL, user TEXT NOT NULL,
    event TEXT NOT NULL, old_text TEXT, new_text TEXT, old_tier TEXT, new_tier TEXT, actor TEXT NOT NULL,
    at REAL NOT NULL, seq INTEGER NOT NULL);
"""


def test_an_old_sqlite_database_is_migrated_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('store_id', 'old-store')")
    db.execute("INSERT INTO memories (id, user, shard, text, tier, importance, metadata, embedding, created_at, "
               "updated_at) VALUES ('mem-old', 'alice', 0, 'likes tea', 'long_term', 0.5, ?, ?, 1000.0, 1000.0)",
               (json.dumps({}), vec(1).tobytes()))
    db.execute("INSERT INTO changes (shard, user, op, key, ts) VALUES (0, 'alice', 'upsert', 1, 1000.0)")
    db.execute("INSERT INTO history (memory_id, user, event, new_text, new_tier, actor, at, seq) "
               "VALUES ('mem-old', 'alice', 'ADD', 'likes tea', 'long_term', 'api', 1000.0, 1)")
    db.commit()
    db.close()

    store = SQLiteMemoryStore(path)
    old = store.get("alice", "mem-old")
    assert old is not None and old.occurred_at == 1000.0 and old.session is None and old.text == "likes tea"
    assert store.history("alice", "mem-old")[0].occurred_at is None  # not known for past changes
    assert store.user_index_data("alice")[2] == ["likes tea"]
    records, _ = store.add("alice", 0, [turn("A: hi", "s1", 2, related=(old.key,))])
    assert store.connections("alice", [old.key]) == {old.key: [(records[0].key, "related")]}
    store.close()
    reopened = SQLiteMemoryStore(path)  # opening again migrates nothing twice
    assert reopened.store_id == "old-store" and reopened.get("alice", records[0].id).occurred_at == MAY_8_2023  # type: ignore[union-attr]
    index = ShardIndex(reopened, 0, 8, 4)
    assert [h.key for h in index.search("alice", np.asarray(vec(1)), 1)] == [old.key]


def test_a_redis_hash_written_before_event_times_reads_as_created(make_store: StoreFactory) -> None:
    store = make_store()
    records, _ = store.add("alice", 0, [mem("old memory")])
    redis_client = getattr(store, "r", None)
    if redis_client is None:
        return  # the SQLite half is the migration test above
    redis_client.hdel(f"{store.p}:m:{records[0].key}", "occurred_at", "session", "index_text")  # type: ignore[attr-defined]
    got = store.get("alice", records[0].id)
    assert got is not None and got.occurred_at == got.created_at and got.session is None
    assert store.user_index_data("alice")[2] == ["old memory"]
    assert store.connections("alice", [records[0].key]) == {records[0].key: []}
    assert store.delete("alice", 0, [records[0].id]) is not None
