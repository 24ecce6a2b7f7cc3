"""Response cache contract: both backends (in-process and a real Redis)."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from serve_app.core.redis_cache import RedisCache
from serve_app.core.response_cache import CacheBackend, InProcessCache, cache_key


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["memory", "redis"])
def make_cache(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    def make(max_entries: int = 10, ttl_s: float = 60) -> CacheBackend:
        if request.param == "memory":
            return InProcessCache(max_entries, ttl_s)
        server = request.getfixturevalue("redis_server")
        return RedisCache(server.url, max_entries, ttl_s, prefix=f"c{uuid.uuid4().hex[:8]}")
    return make


def test_key_depends_on_payload_scope_and_memory_version() -> None:
    base = cache_key("user:a", 1, {"m": [1, 2], "t": 0})
    assert base == cache_key("user:a", 1, {"t": 0, "m": [1, 2]})  # key order is irrelevant
    assert base != cache_key("user:a", 2, {"m": [1, 2], "t": 0})
    assert base != cache_key("user:b", 1, {"m": [1, 2], "t": 0})
    assert base != cache_key("user:a", 1, {"m": [1, 2], "t": 1})


async def test_hits_misses_and_lru_evictions(make_cache) -> None:  # type: ignore[no-untyped-def]
    cache = make_cache(max_entries=2)
    assert await cache.get("s:1:a") is None
    await cache.put("s:1:a", {"x": 1})
    await cache.put("s:1:b", {"x": 2})
    assert (await cache.get("s:1:a")).value == {"x": 1}  # a is now the most recent
    await cache.put("s:1:c", {"x": 3})  # evicts b
    assert await cache.get("s:1:b") is None
    stats = await cache.stats()
    assert (stats["hits"], stats["misses"], stats["evictions"], stats["entries"]) == (1, 2, 1, 2)
    assert stats["hit_rate"] == round(1 / 3, 4)


async def test_entries_expire(make_cache) -> None:  # type: ignore[no-untyped-def]
    cache = make_cache(ttl_s=0.1)
    await cache.put("s:1:a", {"x": 1})
    await asyncio.sleep(0.25)
    assert await cache.get("s:1:a") is None
    assert (await cache.stats())["entries"] == 0


async def test_clear_one_scope(make_cache) -> None:  # type: ignore[no-untyped-def]
    cache = make_cache()
    await cache.put("user:a:1:x", {"v": 1})
    await cache.put("user:b:1:x", {"v": 2})
    assert await cache.clear("user:a") == 1
    assert await cache.get("user:a:1:x") is None and (await cache.get("user:b:1:x")).value == {"v": 2}
    assert await cache.clear() == 1


async def test_clearing_a_scope_with_glob_characters_clears_only_it(make_cache) -> None:  # type: ignore[no-untyped-def]
    """Redis MATCH is a glob: an unescaped `user:*` scope would clear every user's answers."""
    cache = make_cache()
    for scope in ("user:*", "user:a", "user:[ab]", "user:b"):
        await cache.put(f"{scope}:1:x", {"v": scope})
    assert await cache.clear("user:*") == 1
    assert await cache.clear("user:[ab]") == 1
    assert (await cache.get("user:a:1:x")).value == {"v": "user:a"}
    assert (await cache.get("user:b:1:x")).value == {"v": "user:b"}
    assert await cache.get("user:*:1:x") is None


async def test_semantic_hits_stay_in_their_group(make_cache) -> None:  # type: ignore[no-untyped-def]
    cache = make_cache()
    await cache.put("user:a:1:q1", {"answer": "a's"}, group="user:a:1:g", vector=unit(1, 0, 0))
    near = unit(1, 0.1, 0)
    hit = await cache.get("user:a:1:q2", group="user:a:1:g", vector=near, min_similarity=0.95)
    assert hit is not None and hit.value == {"answer": "a's"} and 0.95 <= hit.similarity <= 1.0
    # Same question, another user's group (or another memory version): never a hit.
    assert await cache.get("user:b:1:q2", group="user:b:1:g", vector=near, min_similarity=0.95) is None
    assert await cache.get("user:a:2:q2", group="user:a:2:g", vector=near, min_similarity=0.95) is None
    # Below the threshold: a miss.
    assert await cache.get("user:a:1:q3", group="user:a:1:g", vector=unit(0, 1, 0), min_similarity=0.95) is None
    assert (await cache.stats())["semantic_hits"] == 1


async def test_single_flight_claim_wait_release(make_cache) -> None:  # type: ignore[no-untyped-def]
    cache = make_cache()
    assert await cache.claim("s:1:k") == "leader"
    assert await cache.claim("s:1:k") == "follower"
    waiter = asyncio.ensure_future(cache.wait("s:1:k", timeout_s=5))
    await asyncio.sleep(0.05)
    await cache.put("s:1:k", {"answer": 42})
    hit = await waiter
    assert hit is not None and hit.value == {"answer": 42}
    assert (await cache.stats())["dedup_hits"] == 1
    # A leader that gives up releases its followers empty-handed.
    assert await cache.claim("s:1:j") == "leader"
    waiter = asyncio.ensure_future(cache.wait("s:1:j", timeout_s=5))
    await asyncio.sleep(0.05)
    await cache.release("s:1:j")
    assert await waiter is None
    assert await cache.claim("s:1:j") == "leader"


async def test_claiming_an_answered_key_follows_it(make_cache) -> None:  # type: ignore[no-untyped-def]
    """A request that missed, then claims after the leader stored the answer, must not
    generate again."""
    cache = make_cache()
    assert await cache.claim("s:1:k") == "leader"
    await cache.put("s:1:k", {"answer": 1})
    assert await cache.claim("s:1:k") == "follower"
    hit = await cache.wait("s:1:k", timeout_s=1)
    assert hit is not None and hit.value == {"answer": 1}


async def test_a_waiter_never_misses_an_answer_put_while_it_polls(make_cache) -> None:  # type: ignore[no-untyped-def]
    """The answer and the end of the claim land together; a follower polling at that
    moment must see the answer, not conclude that the leader gave up."""
    cache = make_cache(max_entries=1000)
    missed = 0
    for round_ in range(60):
        key = f"s:1:race{round_}"
        assert await cache.claim(key) == "leader"
        waiters = [asyncio.ensure_future(cache.wait(key, 5.0)) for _ in range(5)]
        await asyncio.sleep(0.001 * (round_ % 7))
        await cache.put(key, {"text": "answer"})
        missed += sum(hit is None for hit in await asyncio.gather(*waiters))
    assert missed == 0
