"""Per-user indexes for one shard, kept in step with the store's change log.

Each user has a private index: FAISS `IndexIDMap2(IndexFlatIP)` keyed by the store's
integer memory keys (so a search can only return that user's memories and deletes are
exact) plus a BM25 index of the same texts. At most `max_loaded_users` users stay in
memory (LRU). A user is loaded from its on-disk snapshot when one is valid, then brought
up to date from the user's change log; otherwise it is rebuilt from the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import faiss
import numpy as np
from cachetools import LRUCache

from serve_app.core.lexical import BM25Index
from serve_app.core.snapshot import read_snapshot, remove_snapshot, snapshot_path, write_snapshot
from serve_app.core.store import Change, MemoryStore

logger = logging.getLogger(__name__)


def _remove_ids(index: faiss.Index, keys: np.ndarray) -> None:
    # faiss's Python wrapper takes an int64 id array here (it builds the IDSelectorBatch);
    # its stubs list only the IDSelector form, so the array is cast at this one boundary.
    index.remove_ids(cast(faiss.IDSelector, keys))


class UserIndex:
    """Dense and lexical indexes over one user's memories; `seq` is the last change applied."""

    def __init__(
        self, dim: int, index: faiss.Index | None = None, texts: dict[int, str] | None = None, seq: int = 0
    ) -> None:
        self.dim = dim
        self.dense = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.texts: dict[int, str] = {}
        self.lexical = BM25Index()
        self.seq = seq
        self.dirty = False
        for key, text in (texts or {}).items():
            self._set_text(key, text)

    def __len__(self) -> int:
        return int(self.dense.ntotal)

    def _set_text(self, key: int, text: str) -> None:
        self.texts[key] = text
        self.lexical.upsert(key, text)

    def upsert(self, keys: np.ndarray, vectors: np.ndarray, texts: list[str]) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        _remove_ids(self.dense, keys)  # idempotent: replaying a change is harmless
        self.dense.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self.dim), keys)
        for key, text in zip(keys.tolist(), texts, strict=True):
            self._set_text(key, text)
        self.dirty = True

    def remove(self, keys: list[int]) -> None:
        _remove_ids(self.dense, np.asarray(keys, dtype=np.int64))
        for key in keys:
            self.texts.pop(key, None)
            self.lexical.remove(key)
        self.dirty = True

    def apply(self, change: Change) -> None:
        if change.op == "upsert" and change.embedding is not None and change.text is not None:
            self.upsert(np.array([change.key]), change.embedding, [change.text])
        elif change.op == "forget":
            self.remove(list(self.texts))
        else:
            self.remove([change.key])
        self.seq = max(self.seq, change.seq)

    def dense_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        if len(self) == 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        scores, ids = self.dense.search(q, min(k, len(self)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def similarities(self, query: np.ndarray, keys: list[int]) -> dict[int, float]:
        """Exact cosine of the query to given memories (for lexical-only candidates)."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        return {k: float(self.dense.reconstruct(k) @ q) for k in keys}


@dataclass(frozen=True)
class Hit:
    key: int
    similarity: float  # cosine of query and memory
    lexical: float = 0.0  # BM25 score (0 when the memory shares no query term)
    fused: float = 0.0  # reciprocal-rank fusion of the dense and lexical rankings


RRF_K = 60  # the usual reciprocal-rank-fusion constant (Cormack et al., 2009)


def fuse(dense: list[tuple[int, float]], lexical: list[tuple[int, float]]) -> dict[int, float]:
    """Reciprocal rank fusion: rank-based, so cosine and BM25 scales need no tuning."""
    fused: dict[int, float] = {}
    for ranking in (dense, lexical):
        for rank, (key, _) in enumerate(ranking):
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
    return fused


class ShardIndex:
    """All loaded user indexes of one shard plus the shard-log position they reflect."""

    def __init__(
        self, store: MemoryStore, shard: int, dim: int, max_loaded_users: int, snapshot_dir: Path | None = None
    ) -> None:
        self.store = store
        self.shard = shard
        self.dim = dim
        self.snapshot_dir = snapshot_dir
        self.applied_seq = store.last_seq(shard)
        self._users: LRUCache[str, UserIndex] = _EvictingLRU(max_loaded_users, self._on_evict)

    @property
    def loaded_users(self) -> int:
        return len(self._users)

    # ------------------------------------------------------------------ keeping up with the log

    def catch_up(self) -> int:
        """Apply every logged change after `applied_seq` to the users held in memory."""
        while True:
            changes = self.store.changes_since(self.shard, self.applied_seq)
            if not changes:
                return self.applied_seq
            for change in changes:
                if change.op == "forget":
                    self._forget_locally(change.user)
                    continue
                index = self._users.get(change.user)
                if index is not None:  # not loaded: it is brought up to date when loaded
                    index.apply(change)
            self.applied_seq = changes[-1].seq

    def _forget_locally(self, user: str) -> None:
        self._users.pop(user, None)
        if self.snapshot_dir is not None:
            remove_snapshot(snapshot_path(self.snapshot_dir, user))

    # ------------------------------------------------------------------ loading and saving users

    def _load(self, user: str) -> UserIndex:
        index = self._from_snapshot(user)
        if index is not None:
            for change in self.store.user_changes_since(user, index.seq):
                index.apply(change)
            if len(index) == self.store.count(user):
                return index
            logger.warning("snapshot of a user on shard %d disagrees with the store; rebuilding", self.shard)
        # The version is read first: a write landing in between is replayed later, not skipped.
        version = self.store.user_version(user)
        keys, vectors, texts = self.store.user_index_data(user)
        index = UserIndex(self.dim, seq=version)
        if len(keys):
            index.upsert(keys, vectors, texts)
        return index

    def _from_snapshot(self, user: str) -> UserIndex | None:
        if self.snapshot_dir is None:
            return None
        snap = read_snapshot(snapshot_path(self.snapshot_dir, user), user, self.store.store_id)
        if snap is None:
            return None
        index = UserIndex(self.dim, snap.index, snap.texts, snap.seq)
        index.dirty = False
        return index

    def save(self, user: str, index: UserIndex) -> None:
        if self.snapshot_dir is None or not index.dirty:
            return
        write_snapshot(snapshot_path(self.snapshot_dir, user), user, index.seq, self.store.store_id, index.dense,
                       index.texts)
        index.dirty = False

    def flush(self) -> int:
        """Snapshot every loaded user that changed since its last snapshot."""
        dirty = [(u, i) for u, i in self._users.items() if i.dirty]
        for user, index in dirty:
            self.save(user, index)
        return len(dirty)

    def _on_evict(self, user: str, index: UserIndex) -> None:
        self.save(user, index)

    def user(self, user: str) -> UserIndex:
        index = self._users.get(user)
        if index is None:
            index = self._load(user)
            self._users[user] = index
        return index

    # ------------------------------------------------------------------ search

    def search(
        self, user: str, query: np.ndarray, k: int, query_text: str | None = None, feedback: bool = False
    ) -> list[Hit]:
        """Dense top-k, fused with BM25 top-k when the query text is given; `feedback`: the BM25
        top-k of the query expanded by RM3 instead."""
        self.catch_up()
        index = self.user(user)
        dense = index.dense_search(query, k)
        if not query_text:
            return [Hit(key, sim, 0.0, sim) for key, sim in dense]
        lexical = index.lexical.feedback_search(query_text, k) if feedback else index.lexical.search(query_text, k)
        fused = fuse(dense, lexical)
        similarity = dict(dense)
        missing = [key for key in fused if key not in similarity]
        similarity.update(index.similarities(query, missing))
        bm25 = dict(lexical)
        hits = [Hit(key, similarity[key], bm25.get(key, 0.0), score) for key, score in fused.items()]
        return sorted(hits, key=lambda h: h.fused, reverse=True)


class _EvictingLRU(LRUCache[str, UserIndex]):
    """LRUCache that hands evicted entries to a callback (to snapshot them)."""

    def __init__(self, maxsize: int, on_evict: Callable[[str, UserIndex], None]) -> None:
        super().__init__(maxsize=maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, UserIndex]:
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value
