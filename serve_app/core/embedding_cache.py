"""LRU cache of text -> embedding with hit/miss counters."""

from __future__ import annotations

import numpy as np
from cachetools import LRUCache


class EmbeddingCache:
    def __init__(self, max_entries: int) -> None:
        self._entries: LRUCache[str, np.ndarray] = LRUCache(maxsize=max_entries)
        self.hits = 0
        self.misses = 0

    def lookup(self, texts: list[str], namespace: str | None = None) -> tuple[dict[int, np.ndarray], list[int]]:
        """Cached vectors by position, and the positions still to embed. A `namespace`
        (a tenant's) keeps its entries apart: a hit must not tell one tenant, by its
        speed, that another embedded the same text."""
        found: dict[int, np.ndarray] = {}
        missing: list[int] = []
        for i, text in enumerate(texts):
            vector = self._entries.get(_key(text, namespace))
            if vector is None:
                missing.append(i)
            else:
                found[i] = vector
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def store(self, text: str, vector: np.ndarray, namespace: str | None = None) -> None:
        self._entries[_key(text, namespace)] = vector

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries)}


def _key(text: str, namespace: str | None) -> str:
    # U+001F cannot be in a tenant name, so namespaced keys never equal another's.
    return text if namespace is None else f"{namespace}\x1f{text}"
