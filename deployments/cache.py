"""Cache deployment: the response cache shared by every Orchestrator replica, in this
replica's memory (default) or in Redis (shared by all Cache replicas).

Its methods are the configured backend's (`serve_app.core.response_cache.CacheBackend`:
get, put, claim, release, wait, clear, stats), reached through `__getattr__` (Ray Serve
looks methods up with getattr), so the contract is written once, in the backend protocol,
and once on the calling side, in `serve_app.clients.cache.CacheClient`.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from serve_app.core.caches import open_cache
from serve_app.settings import CacheSettings


@serve.deployment(name="Cache", ray_actor_options={"num_cpus": 0.1})
class Cache:
    def __init__(self, settings: CacheSettings) -> None:
        # `${NAME}` in cache.redis_url is filled from this replica's environment, here only.
        redis_url = settings.resolved_redis_url() if settings.backend == "redis" else None
        self._backend = open_cache(settings.backend, settings.max_entries, settings.ttl_s, redis_url,
                                   settings.redis_timeout_s)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # Ray's own hooks and private names are never the backend's
            raise AttributeError(name)
        return getattr(self._backend, name)
