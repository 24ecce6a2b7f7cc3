"""Opens the response-cache backend a configuration names (as `stores.py` does for stores)."""

from __future__ import annotations

from serve_app.core.response_cache import CacheBackend, InProcessCache


def open_cache(backend: str, max_entries: int, ttl_s: float, redis_url: str | None = None,
               redis_timeout_s: float = 5.0) -> CacheBackend:
    if backend == "redis":
        if not redis_url:
            raise ValueError("cache.backend 'redis' needs cache.redis_url")
        from serve_app.core.redis_cache import RedisCache  # redis only when configured

        return RedisCache(redis_url, max_entries, ttl_s, timeout_s=redis_timeout_s)
    return InProcessCache(max_entries, ttl_s)
