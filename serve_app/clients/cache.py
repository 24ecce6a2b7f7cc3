"""Client of the Cache deployment, and the near cache that decorates it.

The near cache: a hit in the Cache deployment costs a Ray round trip (~5 ms on a 2-core
machine); an answer this replica has already seen is served from its own memory instead.
Safe by construction: keys carry the user's memory version, so a memory change makes old
keys unreachable. The one staleness it allows: after `POST /v1/cache/clear` or a
forgotten user, *other* Orchestrator replicas may hold those entries (unreachable for a
forgotten user, whose version moved on) until `cache.local_ttl_s` passes; this replica
drops them at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cachetools import TTLCache

from serve_app.clients.endpoint import Endpoint
from serve_app.core.response_cache import CacheHit, ClaimResult


class CacheClient:
    """Exact and semantic lookups, single-flight claims, and the cache's admin calls."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                  min_similarity: float = 1.0) -> CacheHit | None:
        """The answer stored under `key`; with a `group` and `vector`, the answer of the most
        similar entry of that group at `min_similarity` or more (semantic lookup)."""
        hit: CacheHit | None = await self._endpoint.call("get", key, group, vector, min_similarity)
        return hit

    async def put(self, key: str, value: dict[str, Any], group: str | None = None,
                  vector: np.ndarray | None = None) -> None:
        await self._endpoint.call("put", key, value, group, vector)

    async def claim(self, key: str) -> ClaimResult:
        """`leader`: generate and put the answer; `follower`: `wait` for the leader's."""
        role: ClaimResult = await self._endpoint.call("claim", key)
        return role

    async def release(self, key: str) -> None:
        """Give up a claim without an answer: followers then generate themselves."""
        await self._endpoint.call("release", key)

    async def wait(self, key: str, timeout_s: float) -> CacheHit | None:
        hit: CacheHit | None = await self._endpoint.call("wait", key, timeout_s)
        return hit

    async def clear(self, scope: str | None = None) -> int:
        """Drop every entry of `scope` (`user:<id>` or `shared`), or all; returns how many."""
        cleared: int = await self._endpoint.call("clear", scope)
        return cleared

    async def stats(self) -> dict[str, float]:
        stats: dict[str, float] = await self._endpoint.call("stats")
        return stats

    def scoped(self, prefix: str | None) -> CacheClient:
        """This client with every key, group and scope under `prefix` (a tenant's)."""
        return self if prefix is None else PrefixedCacheClient(self, prefix)


class PrefixedCacheClient(CacheClient):
    """A tenant's view of the cache (`tenants.Namespace.cache_prefix`): every key and
    semantic group becomes `<prefix>:<key>`, so no lookup, claim or clear of one tenant
    reaches another's entries; `clear()` clears the tenant's entries only."""

    def __init__(self, inner: CacheClient, prefix: str) -> None:
        self._inner, self._prefix = inner, prefix

    def _k(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                  min_similarity: float = 1.0) -> CacheHit | None:
        return await self._inner.get(self._k(key), None if group is None else self._k(group), vector, min_similarity)

    async def put(self, key: str, value: dict[str, Any], group: str | None = None,
                  vector: np.ndarray | None = None) -> None:
        await self._inner.put(self._k(key), value, None if group is None else self._k(group), vector)

    async def claim(self, key: str) -> ClaimResult:
        return await self._inner.claim(self._k(key))

    async def release(self, key: str) -> None:
        await self._inner.release(self._k(key))

    async def wait(self, key: str, timeout_s: float) -> CacheHit | None:
        return await self._inner.wait(self._k(key), timeout_s)

    async def clear(self, scope: str | None = None) -> int:
        return await self._inner.clear(self._prefix if scope is None else self._k(scope))

    async def stats(self) -> dict[str, float]:
        return await self._inner.stats()

    def scoped(self, prefix: str | None) -> CacheClient:
        return self._inner.scoped(prefix)


class NearCacheClient(CacheClient):
    """A `CacheClient` that keeps this replica's exact hits and puts in a small TTL cache."""

    def __init__(self, endpoint: Endpoint, max_entries: int, ttl_s: float) -> None:
        super().__init__(endpoint)
        self._near: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=max_entries, ttl=ttl_s)
        self.near_hits = 0

    async def get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                  min_similarity: float = 1.0) -> CacheHit | None:
        value = self._near.get(key) if group is None else None
        if value is not None:
            self.near_hits += 1
            return CacheHit(value)
        hit = await super().get(key, group, vector, min_similarity)
        if hit is not None and hit.similarity is None:
            self._near[key] = hit.value
        return hit

    async def put(self, key: str, value: dict[str, Any], group: str | None = None,
                  vector: np.ndarray | None = None) -> None:
        self._near[key] = value
        await super().put(key, value, group, vector)

    async def wait(self, key: str, timeout_s: float) -> CacheHit | None:
        hit = await super().wait(key, timeout_s)
        if hit is not None:
            self._near[key] = hit.value
        return hit

    async def clear(self, scope: str | None = None) -> int:
        for key in [k for k in list(self._near.keys()) if scope is None or k.startswith(f"{scope}:")]:
            self._near.pop(key, None)
        return await super().clear(scope)

    async def stats(self) -> dict[str, float]:
        stats = dict(await super().stats())
        # Near hits are hits the shared cache never saw: fold them in.
        stats["near_hits"] = self.near_hits
        stats["hits"] = stats.get("hits", 0) + self.near_hits
        total = stats["hits"] + stats.get("semantic_hits", 0) + stats.get("misses", 0)
        stats["hit_rate"] = round((stats["hits"] + stats.get("semantic_hits", 0)) / total, 4) if total else 0.0
        return stats
