"""Embedded MemoryStore: one SQLite file in WAL mode, shared by every process on the node.

Each write is one `BEGIN IMMEDIATE` transaction (writers are serialised, so `seq`
order is commit order); with `synchronous=FULL` a commit survives power loss. One
connection per instance guarded by a lock, so it is safe to call from worker threads.
Key-value spaces live in `kv` (space, key, value), their versions in `kv_versions`: a row
per space that is never deleted, so a version survives reopening and never goes backwards.

Event time, sessions and connections: `memories.occurred_at`, `session` and `index_text`
(what the row is indexed by when it differs from `text`), and `links` (a row per direction
of a "related" connection; session neighbours are read from `memories` itself). A database
written before these existed is migrated when opened: the columns are added, `occurred_at`
is set to `created_at` (the best knowledge of when those events happened).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.core.store import (
    Change,
    ChangeOp,
    ConnectionKind,
    HistoryEvent,
    HistoryEventKind,
    MemoryPatch,
    MemoryRecord,
    NewMemory,
    as_blob,
    empty_index_data,
    from_blob,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    key            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    user           TEXT NOT NULL,
    shard          INTEGER NOT NULL,
    text           TEXT NOT NULL,
    tier           TEXT NOT NULL,
    importance     REAL NOT NULL,
    metadata       TEXT NOT NULL,
    embedding      BLOB NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    expires_at     REAL,
    access_count   INTEGER NOT NULL DEFAULT 0,
    last_accessed  REAL,
    occurred_at    REAL,
    session        TEXT,
    index_text     TEXT
);
CREATE INDEX IF NOT EXISTS memories_user ON memories(user, key);
CREATE TABLE IF NOT EXISTS changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    shard  INTEGER NOT NULL,
    user   TEXT NOT NULL,
    op     TEXT NOT NULL,
    key    INTEGER NOT NULL,
    ts     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_shard ON changes(shard, seq);
CREATE INDEX IF NOT EXISTS changes_user ON changes(user, seq);
CREATE TABLE IF NOT EXISTS history (
    hid        INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id  TEXT NOT NULL,
    user       TEXT NOT NULL,
    event      TEXT NOT NULL,
    old_text   TEXT,
    new_text   TEXT,
    old_tier   TEXT,
    new_tier   TEXT,
    actor      TEXT NOT NULL,
    at         REAL NOT NULL,
    seq        INTEGER NOT NULL,
    occurred_at REAL
);
CREATE INDEX IF NOT EXISTS history_memory ON history(user, memory_id, hid);
CREATE TABLE IF NOT EXISTS kv (
    space  TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (space, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_versions (space TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS links (
    user  TEXT NOT NULL,
    a     INTEGER NOT NULL,
    b     INTEGER NOT NULL,
    kind  TEXT NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_user ON links(user);
"""

# Columns added after the first release: (table, column, type). Added when a database is opened.
_MIGRATIONS = (
    ("memories", "occurred_at", "REAL"),
    ("memories", "session", "TEXT"),
    ("memories", "index_text", "TEXT"),
    ("history", "occurred_at", "REAL"),
)

MAX_KEY = 2**63 - 1

_COLUMNS = (
    "key, id, user, text, tier, importance, metadata, created_at, updated_at, expires_at, access_count, last_accessed, "
    "COALESCE(occurred_at, created_at), session"
)


def _record(row: Sequence[Any]) -> MemoryRecord:
    (key, mid, user, text, tier, importance, metadata, created, updated, expires, count, accessed, occurred,
     session) = row
    return MemoryRecord(
        key=key, id=mid, user=user, text=text, tier=tier, importance=importance,
        metadata=json.loads(metadata), created_at=created, updated_at=updated,
        expires_at=expires, access_count=count, last_accessed=accessed, occurred_at=occurred, session=session,
    )


def _patch_fields(patch: MemoryPatch, now: float) -> dict[str, Any]:
    fields: dict[str, Any] = {"updated_at": now}
    if patch.text is not None:
        fields["text"] = patch.text
        fields["index_text"] = patch.index_text
    if patch.occurred_at is not None:
        fields["occurred_at"] = patch.occurred_at
    if patch.embedding is not None:
        fields["embedding"] = as_blob(patch.embedding)
    if patch.importance is not None:
        fields["importance"] = patch.importance
    if patch.metadata is not None:
        fields["metadata"] = json.dumps(patch.metadata)
    if patch.tier is not None:
        fields["tier"] = patch.tier
        fields["expires_at"] = patch.expires_at
    return fields


class SQLiteMemoryStore:
    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=30000")
        # Access statistics are advisory: their own connection commits without fsync, so a
        # search never waits for the disk (WAL + NORMAL still survives a process crash).
        self._stats_db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._stats_db.execute("PRAGMA synchronous=NORMAL")
        self._stats_db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            self.store_id: str = self._db.execute("SELECT value FROM meta WHERE name='store_id'").fetchone()[0]
        self._migrate()

    def _migrate(self) -> None:
        """Bring a database written by an older memserve up to this schema, in one transaction
        (several processes may open the same file at once: the check runs inside it)."""
        with self._tx() as cur:
            for table, column, kind in _MIGRATIONS:
                if column not in {row[1] for row in cur.execute(f"PRAGMA table_info({table})")}:
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    if (table, column) == ("memories", "occurred_at"):
                        cur.execute("UPDATE memories SET occurred_at = created_at")
            cur.execute("CREATE INDEX IF NOT EXISTS memories_session ON memories(user, session, key)")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: committed on success, rolled back on any error."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @staticmethod
    def _log(cur: sqlite3.Cursor, shard: int, user: str, op: ChangeOp, key: int, now: float) -> int:
        cur.execute("INSERT INTO changes (shard, user, op, key, ts) VALUES (?,?,?,?,?)", (shard, user, op, key, now))
        return int(cur.lastrowid or 0)

    @staticmethod
    def _history(
        cur: sqlite3.Cursor, user: str, memory_id: str, event: HistoryEventKind, old: MemoryRecord | None,
        new_text: str | None, new_tier: str | None, actor: str, now: float, seq: int, occurred_at: float | None,
    ) -> None:
        cur.execute(
            "INSERT INTO history (memory_id, user, event, old_text, new_text, old_tier, new_tier, actor, at, seq, "
            "occurred_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (memory_id, user, event, old.text if old else None, new_text, old.tier if old else None, new_tier,
             actor, now, seq, occurred_at),
        )

    @staticmethod
    def _link(cur: sqlite3.Cursor, user: str, a: int, b: int) -> None:
        """Connect two of the user's memories both ways (nothing if b is not the user's)."""
        if a == b:
            return
        owned = cur.execute("SELECT 1 FROM memories WHERE key = ? AND user = ?", (b, user)).fetchone()
        if owned is not None:
            cur.executemany("INSERT OR IGNORE INTO links (user, a, b, kind) VALUES (?,?,?,'related')",
                            [(user, a, b), (user, b, a)])

    # ------------------------------------------------------------------ writes

    def add(
        self, user: str, shard: int, items: Sequence[NewMemory], actor: str = "api"
    ) -> tuple[list[MemoryRecord], int]:
        now = time.time()
        records: list[MemoryRecord] = []
        seq = 0
        with self._tx() as cur:
            for item in items:
                mid = f"mem-{uuid.uuid4().hex}"
                occurred = now if item.occurred_at is None else item.occurred_at
                cur.execute(
                    "INSERT INTO memories (id, user, shard, text, tier, importance, metadata, embedding, "
                    "created_at, updated_at, expires_at, occurred_at, session, index_text) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (mid, user, shard, item.text, item.tier, item.importance, json.dumps(item.metadata),
                     as_blob(item.embedding), now, now, item.expires_at, occurred, item.session, item.index_text),
                )
                key = int(cur.lastrowid or 0)
                for other in (*item.related, *(records[i].key for i in item.related_items if i < len(records))):
                    self._link(cur, user, key, other)
                seq = self._log(cur, shard, user, "upsert", key, now)
                self._history(cur, user, mid, "ADD", None, item.text, item.tier, actor, now, seq, occurred)
                records.append(MemoryRecord(
                    key=key, id=mid, user=user, text=item.text, tier=item.tier, importance=item.importance,
                    metadata=dict(item.metadata), created_at=now, updated_at=now, expires_at=item.expires_at,
                    access_count=0, last_accessed=None, occurred_at=occurred, session=item.session,
                ))
        return records, seq

    def update(
        self, user: str, shard: int, patches: Sequence[tuple[str, MemoryPatch]], actor: str = "api",
        event: HistoryEventKind = "UPDATE",
    ) -> tuple[list[MemoryRecord], int]:
        """Apply patches to the user's memories in one transaction; unknown ids (and other
        users' ids) are skipped. Returns the updated records and the last seq (0 if none)."""
        now = time.time()
        updated: list[MemoryRecord] = []
        seq = 0
        with self._tx() as cur:
            for memory_id, patch in patches:
                row = cur.execute(f"SELECT {_COLUMNS} FROM memories WHERE id = ? AND user = ?",
                                  (memory_id, user)).fetchone()
                if row is None:
                    continue
                old = _record(row)
                fields = _patch_fields(patch, now)
                assignments = ", ".join(f"{name} = ?" for name in fields)
                cur.execute(f"UPDATE memories SET {assignments} WHERE key = ?", (*fields.values(), old.key))
                seq = self._log(cur, shard, user, "upsert", old.key, now)
                new = _record(cur.execute(f"SELECT {_COLUMNS} FROM memories WHERE key = ?", (old.key,)).fetchone())
                self._history(cur, user, memory_id, event, old, new.text, new.tier, actor, now, seq, new.occurred_at)
                updated.append(new)
        return updated, seq

    def delete(
        self, user: str, shard: int, memory_ids: Sequence[str], actor: str = "api", event: HistoryEventKind = "DELETE"
    ) -> int | None:
        now = time.time()
        seq = None
        with self._tx() as cur:
            for memory_id in memory_ids:
                row = cur.execute(f"SELECT {_COLUMNS} FROM memories WHERE id = ? AND user = ?",
                                  (memory_id, user)).fetchone()
                if row is None:
                    continue
                old = _record(row)
                cur.execute("DELETE FROM memories WHERE key = ?", (old.key,))
                cur.execute("DELETE FROM links WHERE user = ? AND (a = ? OR b = ?)", (user, old.key, old.key))
                seq = self._log(cur, shard, user, "delete", old.key, now)
                self._history(cur, user, memory_id, event, old, None, None, actor, now, seq, old.occurred_at)
        return seq

    def forget_user(self, user: str, shard: int) -> int:
        """Remove every record and history row of the user; the log keeps only a
        `forget` marker (no content), which tells replicas to drop the user's index."""
        now = time.time()
        with self._tx() as cur:
            cur.execute("DELETE FROM memories WHERE user = ?", (user,))
            cur.execute("DELETE FROM history WHERE user = ?", (user,))
            cur.execute("DELETE FROM links WHERE user = ?", (user,))
            cur.execute("DELETE FROM changes WHERE user = ?", (user,))
            return self._log(cur, shard, user, "forget", 0, now)

    def record_access(self, user: str, keys: Sequence[int], now: float) -> None:
        """Access statistics are advisory: not logged, they never change `seq`."""
        if not keys:
            return
        with self._lock:
            self._stats_db.executemany(
                "UPDATE memories SET access_count = access_count + 1, last_accessed = ? WHERE key = ? AND user = ?",
                [(now, k, user) for k in keys],
            )

    @staticmethod
    def _bump(cur: sqlite3.Cursor, space: str) -> int:
        """Next version of the space, inside the write's transaction (BEGIN IMMEDIATE
        serialises writers across processes, so no two writes get the same version)."""
        cur.execute("INSERT INTO kv_versions VALUES (?, 1) ON CONFLICT(space) DO UPDATE SET version = version + 1",
                    (space,))
        return int(cur.execute("SELECT version FROM kv_versions WHERE space = ?", (space,)).fetchone()[0])

    def kv_put(self, space: str, key: str, value: str) -> int:
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO kv (space, key, value) VALUES (?,?,?)", (space, key, value))
            return self._bump(cur, space)

    def kv_delete(self, space: str, keys: Sequence[str]) -> int:
        """Bumps the version only if a key was removed: unchanged contents keep theirs."""
        if not keys:
            return self.kv_version(space)
        with self._tx() as cur:
            cur.executemany("DELETE FROM kv WHERE space = ? AND key = ?", [(space, k) for k in keys])
            if cur.rowcount > 0:
                return self._bump(cur, space)
            row = cur.execute("SELECT version FROM kv_versions WHERE space = ?", (space,)).fetchone()
            return int(row[0]) if row else 0

    def kv_replace(self, space: str, items: Mapping[str, str]) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM kv WHERE space = ?", (space,))
            cur.executemany("INSERT INTO kv (space, key, value) VALUES (?,?,?)",
                            [(space, k, v) for k, v in items.items()])
            return self._bump(cur, space)

    # ------------------------------------------------------------------ reads

    def kv_get(self, space: str, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE space = ? AND key = ?", (space, key))
        return str(rows[0][0]) if rows else None

    def kv_items(self, space: str) -> dict[str, str]:
        return dict(self._query("SELECT key, value FROM kv WHERE space = ?", (space,)))

    def kv_version(self, space: str) -> int:
        rows = self._query("SELECT version FROM kv_versions WHERE space = ?", (space,))
        return int(rows[0][0]) if rows else 0

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get(self, user: str, memory_id: str) -> MemoryRecord | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM memories WHERE id = ? AND user = ?", (memory_id, user))
        return _record(rows[0]) if rows else None

    def get_many(self, user: str, keys: Iterable[int]) -> dict[int, MemoryRecord]:
        keys = list(keys)
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self._query(f"SELECT {_COLUMNS} FROM memories WHERE user = ? AND key IN ({marks})", (user, *keys))
        return {r.key: r for r in map(_record, rows)}

    # `list` names this method in the class body: signatures below it say builtins.list.
    def list(self, user: str, tier: str | None, limit: int, after_key: int | None) -> list[MemoryRecord]:
        sql = f"SELECT {_COLUMNS} FROM memories WHERE user = ? AND key > ?"
        args: list[Any] = [user, after_key or 0]
        if tier is not None:
            sql += " AND tier = ?"
            args.append(tier)
        return [_record(r) for r in self._query(sql + " ORDER BY key LIMIT ?", [*args, limit])]

    def all_records(self, user: str) -> builtins.list[MemoryRecord]:
        rows = self._query(f"SELECT {_COLUMNS} FROM memories WHERE user = ? ORDER BY key", (user,))
        return [_record(r) for r in rows]

    def user_index_data(self, user: str) -> tuple[np.ndarray, np.ndarray, builtins.list[str]]:
        """Keys, vectors and index texts of every memory of the user: what an index is built from."""
        rows = self._query("SELECT key, embedding, COALESCE(index_text, text) FROM memories WHERE user = ? "
                           "ORDER BY key", (user,))
        if not rows:
            return empty_index_data()
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return keys, np.stack([from_blob(r[1]) for r in rows]), [r[2] for r in rows]

    def count(self, user: str) -> int:
        return int(self._query("SELECT COUNT(*) FROM memories WHERE user = ?", (user,))[0][0])

    def tier_counts(self, user: str) -> dict[str, int]:
        return dict(self._query("SELECT tier, COUNT(*) FROM memories WHERE user = ? GROUP BY tier", (user,)))

    def history(self, user: str, memory_id: str) -> builtins.list[HistoryEvent]:
        rows = self._query(
            "SELECT memory_id, event, old_text, new_text, old_tier, new_tier, actor, at, seq, occurred_at FROM history "
            "WHERE user = ? AND memory_id = ? ORDER BY hid", (user, memory_id),
        )
        return [HistoryEvent(*row) for row in rows]

    def users(self) -> builtins.list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT user FROM memories")]

    def _changes(self, where: str, args: Sequence[Any], limit: int | None = None) -> builtins.list[Change]:
        sql = (
            "SELECT c.seq, c.user, c.op, c.key, m.embedding, COALESCE(m.index_text, m.text) FROM changes c "
            f"LEFT JOIN memories m ON m.key = c.key WHERE {where} ORDER BY c.seq"
        )
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, limit]
        return [
            Change(seq=s, user=u, op=op, key=k, embedding=None if blob is None else from_blob(blob), text=text)
            for s, u, op, k, blob, text in self._query(sql, args)
        ]

    def changes_since(self, shard: int, seq: int, limit: int = 10_000) -> builtins.list[Change]:
        return self._changes("c.shard = ? AND c.seq > ?", (shard, seq), limit)

    def user_changes_since(self, user: str, seq: int) -> builtins.list[Change]:
        return self._changes("c.user = ? AND c.seq > ?", (user, seq))

    def last_seq(self, shard: int | None = None) -> int:
        if shard is None:
            return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM changes WHERE shard = ?", (shard,))[0][0])

    def user_version(self, user: str) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM changes WHERE user = ?", (user,))[0][0])

    def session_turn_before(self, user: str, session: str, before_key: int | None) -> MemoryRecord | None:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM memories WHERE user = ? AND session = ? AND key < ? ORDER BY key DESC LIMIT 1",
            (user, session, MAX_KEY if before_key is None else before_key),
        )
        return _record(rows[0]) if rows else None

    def connections(self, user: str, keys: Sequence[int]) -> dict[int, builtins.list[tuple[int, ConnectionKind]]]:
        found: dict[int, builtins.list[tuple[int, ConnectionKind]]] = {}
        for key in keys:
            row = self._query("SELECT session FROM memories WHERE key = ? AND user = ?", (key, user))
            if not row:
                continue
            linked: builtins.list[tuple[int, ConnectionKind]] = []
            session = row[0][0]
            if session is not None:
                for sql in ("key < ? ORDER BY key DESC", "key > ? ORDER BY key"):
                    near = self._query(f"SELECT key FROM memories WHERE user = ? AND session = ? AND {sql} LIMIT 1",
                                       (user, session, key))
                    linked += [(int(near[0][0]), "session")] if near else []
            related = self._query("SELECT b FROM links WHERE user = ? AND a = ? ORDER BY b", (user, key))
            linked += [(int(r[0]), "related") for r in related]
            found[key] = linked
        return found

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._stats_db.close()
