from __future__ import annotations

import time

from serve_app.core.response_cache import ResponseCache, cache_key


def test_key_depends_on_payload_scope_and_memory_version() -> None:
    base = cache_key("user:a", 1, {"m": [1, 2], "t": 0})
    assert base == cache_key("user:a", 1, {"t": 0, "m": [1, 2]})  # key order is irrelevant
    assert base != cache_key("user:a", 2, {"m": [1, 2], "t": 0})
    assert base != cache_key("user:b", 1, {"m": [1, 2], "t": 0})
    assert base != cache_key("user:a", 1, {"m": [1, 2], "t": 1})


def test_hits_misses_and_lru_evictions() -> None:
    cache = ResponseCache(max_entries=2, ttl_s=60)
    assert cache.get("a") is None
    cache.put("a", {"x": 1})
    cache.put("b", {"x": 2})
    assert cache.get("a") == {"x": 1}  # a is now most recent
    cache.put("c", {"x": 3})  # evicts b
    assert cache.get("b") is None
    stats = cache.stats()
    assert stats["hits"] == 1 and stats["misses"] == 2 and stats["evictions"] == 1 and stats["entries"] == 2
    assert stats["hit_rate"] == round(1 / 3, 4)


def test_entries_expire() -> None:
    cache = ResponseCache(max_entries=10, ttl_s=0.05)
    cache.put("a", 1)
    time.sleep(0.1)
    assert cache.get("a") is None
    assert cache.stats()["entries"] == 0


def test_clear_one_scope() -> None:
    cache = ResponseCache(max_entries=10, ttl_s=60)
    cache.put(cache_key("user:a", 1, {}), 1)
    cache.put(cache_key("user:b", 1, {}), 2)
    assert cache.clear("user:a") == 1
    assert cache.stats()["entries"] == 1
    assert cache.clear() == 1
