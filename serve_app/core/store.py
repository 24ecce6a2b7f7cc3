"""The MemoryStore: memserve's system of record.

Every memory lives here with its embedding, so FAISS indexes are derived data that any
replica can rebuild. Every write appends to a change log whose sequence numbers (`seq`)
are monotonic; a shard's log is the subsequence of entries tagged with that shard. A
write is acknowledged (returns its `seq`) only after the transaction has committed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

ChangeOp = Literal["upsert", "delete"]


@dataclass(frozen=True)
class NewMemory:
    text: str
    tier: str
    importance: float
    embedding: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None


@dataclass(frozen=True)
class MemoryRecord:
    key: int  # integer id used inside FAISS
    id: str  # public id
    user: str
    text: str
    tier: str
    importance: float
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    expires_at: float | None
    access_count: int
    last_accessed: float | None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Change:
    """One change-log entry; `embedding` is None for deletes (or rows deleted since)."""

    seq: int
    user: str
    op: ChangeOp
    key: int
    embedding: np.ndarray | None


class MemoryStore(Protocol):
    def add(self, user: str, shard: int, items: Sequence[NewMemory]) -> tuple[list[MemoryRecord], int]: ...
    def get(self, user: str, memory_id: str) -> MemoryRecord | None: ...
    def get_many(self, user: str, keys: Iterable[int]) -> dict[int, MemoryRecord]: ...
    def list(self, user: str, tier: str | None, limit: int, after_key: int | None) -> list[MemoryRecord]: ...
    def delete(self, user: str, shard: int, memory_id: str) -> int | None: ...
    def user_embeddings(self, user: str) -> tuple[np.ndarray, np.ndarray]: ...
    def changes_since(self, shard: int, seq: int, limit: int = 10_000) -> list[Change]: ...
    def last_seq(self, shard: int | None = None) -> int: ...
    def user_version(self, user: str) -> int: ...
    def record_access(self, user: str, keys: Sequence[int], now: float) -> None: ...
    def close(self) -> None: ...


_SCHEMA = """
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
    last_accessed  REAL
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
"""

_RECORD_COLUMNS = (
    "key, id, user, text, tier, importance, metadata, created_at, updated_at, "
    "expires_at, access_count, last_accessed"
)


def _record(row: sqlite3.Row | tuple[Any, ...]) -> MemoryRecord:
    (key, mid, user, text, tier, importance, metadata, created, updated, expires, count, accessed) = row
    return MemoryRecord(
        key=key, id=mid, user=user, text=text, tier=tier, importance=importance,
        metadata=json.loads(metadata), created_at=created, updated_at=updated,
        expires_at=expires, access_count=count, last_accessed=accessed,
    )


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


class SQLiteMemoryStore:
    """Embedded store: one SQLite file in WAL mode, shared by every process on the node.

    Safe to call from several threads (one connection, one lock); several processes may
    open the same file, SQLite serialises their writers.
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(_SCHEMA)

    # -- writes: each is one transaction; the change log entry commits with the data

    def add(self, user: str, shard: int, items: Sequence[NewMemory]) -> tuple[list[MemoryRecord], int]:
        now = time.time()
        records: list[MemoryRecord] = []
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                seq = 0
                for item in items:
                    mid = f"mem-{uuid.uuid4().hex}"
                    vec = np.ascontiguousarray(item.embedding, dtype=np.float32)
                    cur.execute(
                        "INSERT INTO memories (id, user, shard, text, tier, importance, metadata, "
                        "embedding, created_at, updated_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (mid, user, shard, item.text, item.tier, item.importance,
                         json.dumps(item.metadata), vec.tobytes(), now, now, item.expires_at),
                    )
                    key = int(cur.lastrowid or 0)
                    seq = self._log(cur, shard, user, "upsert", key, now)
                    records.append(MemoryRecord(
                        key=key, id=mid, user=user, text=item.text, tier=item.tier,
                        importance=item.importance, metadata=dict(item.metadata), created_at=now,
                        updated_at=now, expires_at=item.expires_at, access_count=0, last_accessed=None,
                    ))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return records, seq

    def delete(self, user: str, shard: int, memory_id: str) -> int | None:
        now = time.time()
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                row = cur.execute(
                    "SELECT key FROM memories WHERE id = ? AND user = ?", (memory_id, user)
                ).fetchone()
                if row is None:
                    cur.execute("ROLLBACK")
                    return None
                cur.execute("DELETE FROM memories WHERE key = ?", (row[0],))
                seq = self._log(cur, shard, user, "delete", row[0], now)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return seq

    def record_access(self, user: str, keys: Sequence[int], now: float) -> None:
        """Access statistics are advisory: they are not logged and never change `seq`."""
        if not keys:
            return
        with self._lock:
            self._db.executemany(
                "UPDATE memories SET access_count = access_count + 1, last_accessed = ? "
                "WHERE key = ? AND user = ?",
                [(now, k, user) for k in keys],
            )

    @staticmethod
    def _log(cur: sqlite3.Cursor, shard: int, user: str, op: ChangeOp, key: int, now: float) -> int:
        cur.execute(
            "INSERT INTO changes (shard, user, op, key, ts) VALUES (?,?,?,?,?)", (shard, user, op, key, now)
        )
        return int(cur.lastrowid or 0)

    # -- reads

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get(self, user: str, memory_id: str) -> MemoryRecord | None:
        rows = self._query(f"SELECT {_RECORD_COLUMNS} FROM memories WHERE id = ? AND user = ?", (memory_id, user))
        return _record(rows[0]) if rows else None

    def get_many(self, user: str, keys: Iterable[int]) -> dict[int, MemoryRecord]:
        keys = list(keys)
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self._query(
            f"SELECT {_RECORD_COLUMNS} FROM memories WHERE user = ? AND key IN ({marks})", (user, *keys)
        )
        return {r.key: r for r in map(_record, rows)}

    def list(self, user: str, tier: str | None, limit: int, after_key: int | None) -> list[MemoryRecord]:
        sql = f"SELECT {_RECORD_COLUMNS} FROM memories WHERE user = ? AND key > ?"
        args: list[Any] = [user, after_key or 0]
        if tier is not None:
            sql += " AND tier = ?"
            args.append(tier)
        sql += " ORDER BY key LIMIT ?"
        args.append(limit)
        return [_record(r) for r in self._query(sql, args)]

    def user_embeddings(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self._query("SELECT key, embedding FROM memories WHERE user = ? ORDER BY key", (user,))
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return keys, np.stack([_vector(r[1]) for r in rows])

    def changes_since(self, shard: int, seq: int, limit: int = 10_000) -> list[Change]:
        rows = self._query(
            "SELECT c.seq, c.user, c.op, c.key, m.embedding FROM changes c "
            "LEFT JOIN memories m ON m.key = c.key WHERE c.shard = ? AND c.seq > ? ORDER BY c.seq LIMIT ?",
            (shard, seq, limit),
        )
        return [
            Change(seq=s, user=u, op=op, key=k, embedding=None if blob is None else _vector(blob))
            for s, u, op, k, blob in rows
        ]

    def last_seq(self, shard: int | None = None) -> int:
        if shard is None:
            rows = self._query("SELECT MAX(seq) FROM changes")
        else:
            rows = self._query("SELECT MAX(seq) FROM changes WHERE shard = ?", (shard,))
        return int(rows[0][0] or 0)

    def user_version(self, user: str) -> int:
        rows = self._query("SELECT MAX(seq) FROM changes WHERE user = ?", (user,))
        return int(rows[0][0] or 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()
