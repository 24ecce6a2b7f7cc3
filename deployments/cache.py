"""Cache deployment: the TTL + LRU response cache shared by every Orchestrator replica."""

from __future__ import annotations

from typing import Any

from ray import serve

from serve_app.core.response_cache import ResponseCache
from serve_app.settings import CacheSettings


@serve.deployment(name="Cache", ray_actor_options={"num_cpus": 0.1})
class Cache:
    def __init__(self, settings: CacheSettings) -> None:
        self._cache = ResponseCache(settings.max_entries, settings.ttl_s)

    def get(self, key: str) -> Any | None:
        return self._cache.get(key)

    def put(self, key: str, value: Any) -> None:
        self._cache.put(key, value)

    def clear(self, scope: str | None = None) -> int:
        return self._cache.clear(scope)

    def stats(self) -> dict[str, float]:
        return self._cache.stats()
