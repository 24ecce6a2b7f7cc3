"""The MemoryStore contract: memserve's system of record.

Every memory lives in the store with its embedding, so FAISS indexes are derived data
any replica can rebuild. Every write appends to a change log in the same atomic commit;
sequence numbers (`seq`) are global, strictly increasing in commit order, and a shard's
log is the subsequence of entries tagged with that shard. A write is acknowledged
(returns its `seq`) only after it has committed. Two backends implement the contract:
`SQLiteMemoryStore` (embedded default) and `RedisMemoryStore` (clusters).

Beside the memories the store keeps a small key-value space (`kv_*`) for system records
that are not searched by vector (ingestion jobs, the document registry, the catalog). It
never touches memories, the change log, `users()` or `user_version`, so such writes are
not replayed by every VectorSearch replica; each space has its own version instead.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

ChangeOp = Literal["upsert", "delete", "forget"]
HistoryEventKind = Literal["ADD", "UPDATE", "MERGE", "PROMOTE", "DELETE", "EXPIRE", "EVICT"]
# How two memories are connected: neighbouring turns of one session, or close in meaning.
ConnectionKind = Literal["session", "related"]


@dataclass(frozen=True)
class NewMemory:
    """`embedding` embeds `index_text` when one is given (a conversation turn indexed with its
    context), else `text`. `occurred_at`: when the event happened (None: when it is written).
    `related`: keys of the user's existing memories to connect it with; `related_items`:
    positions of earlier items of the same `add` to connect it with."""

    text: str
    tier: str
    importance: float
    embedding: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None
    occurred_at: float | None = None
    session: str | None = None
    index_text: str | None = None
    related: tuple[int, ...] = ()
    related_items: tuple[int, ...] = ()


@dataclass(frozen=True)
class MemoryPatch:
    """Fields to change; None leaves a field as it is (`expires_at` moves with `tier`). A
    new `text` comes with the `index_text` it is indexed by (None: the text itself) and the
    `embedding` of that."""

    text: str | None = None
    embedding: np.ndarray | None = None
    importance: float | None = None
    metadata: dict[str, Any] | None = None
    tier: str | None = None
    expires_at: float | None = None
    occurred_at: float | None = None
    index_text: str | None = None


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
    occurred_at: float | None = None  # when the event happened; the stores always set it
    session: str | None = None  # the conversation a turn belongs to

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @property
    def event_time(self) -> float:
        """When it happened: `occurred_at`, or when it was written if that is unknown."""
        return self.created_at if self.occurred_at is None else self.occurred_at


@dataclass(frozen=True)
class Change:
    """One change-log entry. For an upsert, `embedding` and `text` are the row's current
    values (`text` is what it is indexed by: its index text, or its text); None means a
    delete, a forget, or a row deleted since."""

    seq: int
    user: str
    op: ChangeOp
    key: int
    embedding: np.ndarray | None
    text: str | None = None


@dataclass(frozen=True)
class HistoryEvent:
    memory_id: str
    event: HistoryEventKind
    old_text: str | None
    new_text: str | None
    old_tier: str | None
    new_tier: str | None
    actor: str
    at: float
    seq: int
    occurred_at: float | None = None  # the memory's event time after the change


class MemoryStore(Protocol):
    store_id: str  # changes when the underlying data set is replaced; snapshots check it

    # -- writes (atomic with their log entries and history)
    def add(
        self, user: str, shard: int, items: Sequence[NewMemory], actor: str = "api"
    ) -> tuple[list[MemoryRecord], int]: ...
    def update(
        self, user: str, shard: int, patches: Sequence[tuple[str, MemoryPatch]], actor: str = "api",
        event: HistoryEventKind = "UPDATE",
    ) -> tuple[list[MemoryRecord], int]: ...
    def delete(
        self, user: str, shard: int, memory_ids: Sequence[str], actor: str = "api", event: HistoryEventKind = "DELETE"
    ) -> int | None: ...
    def forget_user(self, user: str, shard: int) -> int: ...
    def record_access(self, user: str, keys: Sequence[int], now: float) -> None: ...

    # -- reads
    def get(self, user: str, memory_id: str) -> MemoryRecord | None: ...
    def get_many(self, user: str, keys: Iterable[int]) -> dict[int, MemoryRecord]: ...
    # `list` names this method in the class body: signatures below it say builtins.list.
    def list(self, user: str, tier: str | None, limit: int, after_key: int | None) -> list[MemoryRecord]: ...
    def all_records(self, user: str) -> builtins.list[MemoryRecord]: ...
    def user_index_data(self, user: str) -> tuple[np.ndarray, np.ndarray, builtins.list[str]]: ...
    def count(self, user: str) -> int: ...
    def tier_counts(self, user: str) -> dict[str, int]: ...
    def history(self, user: str, memory_id: str) -> builtins.list[HistoryEvent]: ...
    def users(self) -> builtins.list[str]: ...
    def changes_since(self, shard: int, seq: int, limit: int = 10_000) -> builtins.list[Change]: ...
    def user_changes_since(self, user: str, seq: int) -> builtins.list[Change]: ...
    def last_seq(self, shard: int | None = None) -> int: ...
    def user_version(self, user: str) -> int: ...

    # -- connections (same user only, always)
    def session_turn_before(self, user: str, session: str, before_key: int | None) -> MemoryRecord | None:
        """The user's latest memory of `session` written before `before_key` (None: the latest)."""
        ...

    def connections(self, user: str, keys: Sequence[int]) -> dict[int, builtins.list[tuple[int, ConnectionKind]]]:
        """For each key: the previous and next memory of its session (in the order written),
        then the memories it was related to when either was written. Only the user's own."""
        ...

    # -- key-value spaces: typed system records outside the memories and their change log.
    # Values are JSON text; callers serialise their own records. Every write is one atomic
    # commit, as durable as a memory write once it returns, and bumps the space's version.
    # A version is persisted, never goes backwards and is never shared by two different
    # contents of the space, so a reader may cache "contents at version v" and reread only
    # when `kv_version` changes: read the version *before* the contents (a write in between
    # then costs one extra reread, never a stale cache). Versions are numbered within one
    # data set: like snapshots, a cache must also check `store_id`.
    def kv_get(self, space: str, key: str) -> str | None:
        """The stored value of `key`, or None."""
        ...

    def kv_items(self, space: str) -> dict[str, str]:
        """Every key of the space with its value, read as one consistent state."""
        ...

    def kv_put(self, space: str, key: str, value: str) -> int:
        """Insert or overwrite one value; returns the space's new version."""
        ...

    def kv_delete(self, space: str, keys: Sequence[str]) -> int:
        """Remove the keys that exist; returns the space's version, bumped only if something
        was removed (unchanged contents keep their version)."""
        ...

    def kv_replace(self, space: str, items: Mapping[str, str]) -> int:
        """Make `items` the whole space (old keys go) in one commit; returns the new version."""
        ...

    def kv_version(self, space: str) -> int:
        """0 for a space never written; strictly increases with every write to it."""
        ...

    def close(self) -> None: ...


def empty_index_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32), []


def as_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)
