"""A small per-Orchestrator near cache in front of the shared Cache deployment.

A hit in the Cache deployment costs a Ray round trip (~5 ms on a 2-core machine); an
answer this replica has already seen is served from its own memory instead. Safe by
construction: keys carry the user's memory version, so a memory change makes old keys
unreachable. The one staleness it allows: after `POST /v1/cache/clear` or a forgotten
user, *other* Orchestrator replicas may hold those entries (unreachable for a forgotten
user, whose version moved on) until `cache.local_ttl_s` passes; this replica drops them
at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cachetools import TTLCache

from serve_app.core.response_cache import CacheHit
from serve_app.services import Services


class NearCacheServices:
    """`Services` with a near cache on the exact-key path; everything else delegates."""

    def __init__(self, inner: Services, max_entries: int, ttl_s: float) -> None:
        self._inner = inner
        self._near: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=max_entries, ttl=ttl_s)
        self.near_hits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def cache_get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                        min_similarity: float = 1.0) -> CacheHit | None:
        value = self._near.get(key) if group is None else None
        if value is not None:
            self.near_hits += 1
            return CacheHit(value)
        hit = await self._inner.cache_get(key, group, vector, min_similarity)
        if hit is not None and hit.similarity is None:
            self._near[key] = hit.value
        return hit

    async def cache_put(self, key: str, value: dict[str, Any], group: str | None = None,
                        vector: np.ndarray | None = None) -> None:
        self._near[key] = value
        await self._inner.cache_put(key, value, group, vector)

    async def cache_wait(self, key: str, timeout_s: float) -> CacheHit | None:
        hit = await self._inner.cache_wait(key, timeout_s)
        if hit is not None:
            self._near[key] = hit.value
        return hit

    async def cache_clear(self, scope: str | None) -> int:
        for key in [k for k in list(self._near.keys()) if scope is None or k.startswith(f"{scope}:")]:
            self._near.pop(key, None)
        return await self._inner.cache_clear(scope)

    async def cache_stats(self) -> dict[str, float]:
        stats = dict(await self._inner.cache_stats())
        # Near hits are hits the shared cache never saw: fold them in.
        stats["near_hits"] = self.near_hits
        stats["hits"] = stats.get("hits", 0) + self.near_hits
        total = stats["hits"] + stats.get("semantic_hits", 0) + stats.get("misses", 0)
        stats["hit_rate"] = round((stats["hits"] + stats.get("semantic_hits", 0)) / total, 4) if total else 0.0
        return stats
