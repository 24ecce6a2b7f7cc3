"""TTL + LRU response cache with the counters `/v1/cache/stats` reports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from cachetools import TTLCache


def cache_key(scope: str, version: int, payload: dict[str, Any]) -> str:
    """Key on the normalised request *and* the memory version it was answered with, so
    an answer is never served after the memories it could have used have changed."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{scope}:{version}:{digest}"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "hit_rate": round(self.hit_rate, 4)}


class _CountingTTLCache(TTLCache):  # type: ignore[type-arg]
    """TTLCache that counts capacity evictions (not expiries)."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl)
        self.evictions = 0

    def popitem(self) -> tuple[Any, Any]:
        self.evictions += 1
        return super().popitem()


class ResponseCache:
    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._entries = _CountingTTLCache(maxsize=max_entries, ttl=ttl_s)
        self._stats = CacheStats()

    def get(self, key: str) -> Any | None:
        value = self._entries.get(key)
        if value is None:
            self._stats.misses += 1
        else:
            self._stats.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        self._entries[key] = value

    def clear(self, scope: str | None = None) -> int:
        if scope is None:
            removed = len(self._entries)
            self._entries.clear()
            return removed
        doomed = [k for k in list(self._entries.keys()) if k.startswith(f"{scope}:")]
        for k in doomed:
            self._entries.pop(k, None)
        return len(doomed)

    def stats(self) -> dict[str, float]:
        self._entries.expire()
        self._stats.entries = len(self._entries)
        self._stats.evictions = self._entries.evictions
        return self._stats.as_dict()
