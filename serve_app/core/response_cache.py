"""The response cache: exact and semantic lookups, single-flight, two backends.

Keys are `scope:version:digest`: the scope is `shared` or `user:<id>`, the version is
the user's memory version, the digest covers the normalised request. An answer is
therefore never replayed after the memories it could have used changed, and never
crosses users. The semantic layer groups entries by everything *but* the query text
(`group`) and matches the query embedding within a group, so it too stays in scope.

Single-flight: the first miss of a key `claim`s it and generates; concurrent misses of
the same key `wait` for its answer instead of generating again. A claim on a key that
was answered since the caller's lookup also makes the caller a follower. A claim expires, so a
leader that dies only delays its followers, who then generate themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
from cachetools import TTLCache

ClaimResult = Literal["leader", "follower"]


def digest(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cache_key(scope: str, version: int, payload: dict[str, Any]) -> str:
    return f"{scope}:{version}:{digest(payload)}"


@dataclass
class CacheStats:
    hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    dedup_hits: int = 0  # requests answered by another request's generation (single-flight)
    evictions: int = 0
    entries: int = 0

    def as_dict(self) -> dict[str, float]:
        total = self.hits + self.semantic_hits + self.misses
        rate = (self.hits + self.semantic_hits) / total if total else 0.0
        return {**asdict(self), "hit_rate": round(rate, 4)}


@dataclass(frozen=True)
class CacheHit:
    value: dict[str, Any]
    similarity: float | None = None  # set for semantic hits


class CacheBackend(Protocol):
    async def get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                  min_similarity: float = 1.0) -> CacheHit | None: ...
    async def put(self, key: str, value: dict[str, Any], group: str | None = None,
                  vector: np.ndarray | None = None) -> None: ...
    async def claim(self, key: str) -> ClaimResult: ...
    async def release(self, key: str) -> None: ...
    async def wait(self, key: str, timeout_s: float) -> CacheHit | None: ...
    async def clear(self, scope: str | None = None) -> int: ...
    async def stats(self) -> dict[str, float]: ...


class _CountingTTLCache(TTLCache[str, dict[str, Any]]):
    """TTLCache that counts capacity evictions (not expiries)."""

    evictions = 0

    def popitem(self) -> tuple[str, dict[str, Any]]:
        self.evictions += 1
        return super().popitem()


class InProcessCache:
    """The default backend: one process's memory (the Cache deployment's replica)."""

    def __init__(self, max_entries: int, ttl_s: float, claim_ttl_s: float = 120.0) -> None:
        self._entries = _CountingTTLCache(maxsize=max_entries, ttl=ttl_s)
        self._groups: dict[str, dict[str, np.ndarray]] = {}  # group -> key -> vector
        self._inflight: dict[str, tuple[asyncio.Event, float]] = {}
        self._claim_ttl_s = claim_ttl_s
        self._stats = CacheStats()

    async def get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                  min_similarity: float = 1.0) -> CacheHit | None:
        value = self._entries.get(key)
        if value is not None:
            self._stats.hits += 1
            return CacheHit(value)
        if group is not None and vector is not None:
            hit = self._semantic(group, vector, min_similarity)
            if hit is not None:
                self._stats.semantic_hits += 1
                return hit
        self._stats.misses += 1
        return None

    def _semantic(self, group: str, vector: np.ndarray, min_similarity: float) -> CacheHit | None:
        members = self._groups.get(group)
        if not members:
            return None
        best_key, best = None, -1.0
        for key, other in list(members.items()):
            if key not in self._entries:  # expired or evicted
                del members[key]
                continue
            similarity = float(np.dot(vector, other))
            if similarity > best:
                best_key, best = key, similarity
        if best_key is None or best < min_similarity:
            return None
        return CacheHit(self._entries[best_key], round(best, 4))

    async def put(self, key: str, value: dict[str, Any], group: str | None = None,
                  vector: np.ndarray | None = None) -> None:
        self._entries[key] = value
        if group is not None and vector is not None:
            self._groups.setdefault(group, {})[key] = np.asarray(vector, dtype=np.float32)
        inflight = self._inflight.pop(key, None)
        if inflight is not None:
            inflight[0].set()

    async def claim(self, key: str) -> ClaimResult:
        if key in self._entries:  # answered since this request's lookup: follow, don't regenerate
            return "follower"
        current = self._inflight.get(key)
        if current is not None and current[1] > time.monotonic():
            return "follower"
        self._inflight[key] = (asyncio.Event(), time.monotonic() + self._claim_ttl_s)
        return "leader"

    async def release(self, key: str) -> None:
        inflight = self._inflight.pop(key, None)
        if inflight is not None:
            inflight[0].set()

    async def wait(self, key: str, timeout_s: float) -> CacheHit | None:
        inflight = self._inflight.get(key)
        if inflight is not None:
            try:
                await asyncio.wait_for(inflight[0].wait(), timeout_s)
            except TimeoutError:
                return None
        value = self._entries.get(key)
        if value is None:
            return None
        self._stats.dedup_hits += 1
        return CacheHit(value)

    async def clear(self, scope: str | None = None) -> int:
        doomed = [k for k in list(self._entries.keys()) if scope is None or k.startswith(f"{scope}:")]
        for key in doomed:
            self._entries.pop(key, None)
        for group in [g for g in self._groups if scope is None or g.startswith(f"{scope}:")]:
            del self._groups[group]
        return len(doomed)

    async def stats(self) -> dict[str, float]:
        self._entries.expire()
        self._stats.entries = len(self._entries)
        self._stats.evictions = self._entries.evictions
        return self._stats.as_dict()
