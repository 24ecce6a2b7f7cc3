"""Cache deployment: the response cache shared by every Orchestrator replica, in this
replica's memory (default) or in Redis (shared by all Cache replicas)."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from serve_app.core.response_cache import CacheHit, ClaimResult, open_cache
from serve_app.settings import CacheSettings


@serve.deployment(name="Cache", ray_actor_options={"num_cpus": 0.1})
class Cache:
    def __init__(self, settings: CacheSettings) -> None:
        self._cache = open_cache(settings.backend, settings.max_entries, settings.ttl_s, settings.redis_url)

    async def get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                  min_similarity: float = 1.0) -> CacheHit | None:
        return await self._cache.get(key, group, vector, min_similarity)

    async def put(self, key: str, value: dict[str, Any], group: str | None = None,
                  vector: np.ndarray | None = None) -> None:
        await self._cache.put(key, value, group, vector)

    async def claim(self, key: str) -> ClaimResult:
        return await self._cache.claim(key)

    async def release(self, key: str) -> None:
        await self._cache.release(key)

    async def wait(self, key: str, timeout_s: float) -> CacheHit | None:
        return await self._cache.wait(key, timeout_s)

    async def clear(self, scope: str | None = None) -> int:
        return await self._cache.clear(scope)

    async def stats(self) -> dict[str, float]:
        return await self._cache.stats()
