"""LRU cache of text -> embedding with hit/miss counters."""

from __future__ import annotations

import numpy as np
from cachetools import LRUCache


class EmbeddingCache:
    def __init__(self, max_entries: int) -> None:
        self._entries: LRUCache[str, np.ndarray] = LRUCache(maxsize=max_entries)
        self.hits = 0
        self.misses = 0

    def lookup(self, texts: list[str]) -> tuple[dict[int, np.ndarray], list[int]]:
        """Cached vectors by position, and the positions still to embed."""
        found: dict[int, np.ndarray] = {}
        missing: list[int] = []
        for i, text in enumerate(texts):
            vector = self._entries.get(text)
            if vector is None:
                missing.append(i)
            else:
                found[i] = vector
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def store(self, text: str, vector: np.ndarray) -> None:
        self._entries[text] = vector

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries)}
