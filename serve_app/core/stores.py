"""Open the configured MemoryStore backend."""

from __future__ import annotations

from pathlib import Path

from serve_app.core.store import MemoryStore


def open_store(backend: str, *, sqlite_path: Path, sqlite_synchronous: str = "FULL",
               redis_url: str | None = None, redis_prefix: str = "memserve",
               redis_timeout_s: float = 5.0) -> MemoryStore:
    if backend == "sqlite":
        from serve_app.core.sqlite_store import SQLiteMemoryStore

        return SQLiteMemoryStore(sqlite_path, sqlite_synchronous)
    if backend == "redis":
        if not redis_url:
            raise ValueError("store.backend 'redis' needs store.redis_url")
        from serve_app.core.redis_store import RedisMemoryStore

        return RedisMemoryStore(redis_url, redis_prefix, redis_timeout_s)
    raise ValueError(f"unknown store backend {backend!r}")
