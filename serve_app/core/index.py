"""Per-user FAISS indexes for one shard, kept in step with the store's change log.

Each user has a private `IndexIDMap2(IndexFlatIP)` keyed by the store's integer memory
keys, so a search can only ever return that user's own memories and deletes are exact.
At most `max_loaded_users` indexes stay in memory (LRU); an evicted user is rebuilt
from the store on the next search.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import faiss
import numpy as np
from cachetools import LRUCache

from serve_app.core.store import Change, MemoryStore

logger = logging.getLogger(__name__)


def shard_for(user: str, num_shards: int) -> int:
    """Stable across processes and machines (unlike `hash()`)."""
    digest = hashlib.blake2b(user.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


class UserIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def upsert(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        self._index.remove_ids(keys)  # idempotent: replaying a change is harmless
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self.dim), keys)

    def remove(self, keys: np.ndarray) -> None:
        self._index.remove_ids(np.ascontiguousarray(keys, dtype=np.int64))

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        if len(self) == 0:
            return []
        scores, ids = self._index.search(np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1), min(k, len(self)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]


@dataclass(frozen=True)
class Hit:
    key: int
    similarity: float


class ShardIndex:
    """All loaded user indexes of one shard plus the log position they reflect."""

    def __init__(self, store: MemoryStore, shard: int, dim: int, max_loaded_users: int) -> None:
        self.store = store
        self.shard = shard
        self.dim = dim
        self.applied_seq = store.last_seq(shard)
        self._users: LRUCache[str, UserIndex] = LRUCache(maxsize=max_loaded_users)

    @property
    def loaded_users(self) -> int:
        return len(self._users)

    def catch_up(self) -> int:
        """Apply every logged change after `applied_seq` to the users held in memory."""
        while True:
            changes = self.store.changes_since(self.shard, self.applied_seq)
            if not changes:
                return self.applied_seq
            for change in changes:
                self._apply(change)
            self.applied_seq = changes[-1].seq

    def _apply(self, change: Change) -> None:
        index = self._users.get(change.user)
        if index is None:  # not loaded: it is rebuilt from the store when needed
            return
        keys = np.array([change.key], dtype=np.int64)
        if change.op == "upsert" and change.embedding is not None:
            index.upsert(keys, change.embedding)
        else:
            index.remove(keys)

    def _user(self, user: str) -> UserIndex:
        index = self._users.get(user)
        if index is None:
            index = UserIndex(self.dim)
            keys, vectors = self.store.user_embeddings(user)
            if len(keys):
                index.upsert(keys, vectors)
            self._users[user] = index
        return index

    def search(self, user: str, query: np.ndarray, k: int) -> list[Hit]:
        self.catch_up()
        return [Hit(key, score) for key, score in self._user(user).search(query, k)]

    def forget(self, user: str) -> None:
        self._users.pop(user, None)
