"""Response cache on Redis, shared by every Cache replica (and so every Orchestrator).

Entries are `:c:<key>` strings with a TTL; `:lru` is a zset of keys by last use, trimmed
to `max_entries` (oldest first); `:g:<group>` hashes hold the semantic layer's vectors;
`:f:<key>` is a single-flight claim (SET NX with an expiry); `:stats` holds counters.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis

from serve_app.core.response_cache import CacheHit, ClaimResult

POLL_S = 0.005

# Follow an answer stored since the caller's lookup, else take the claim if it is free.
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""


def glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class RedisCache:
    # The client is opened without decode_responses, so its replies are bytes; redis-py
    # types them bytes | str (either mode) and the casts below narrow them to bytes.
    def __init__(self, url: str, max_entries: int, ttl_s: float, prefix: str = "memserve-cache",
                 claim_ttl_s: float = 120.0, timeout_s: float = 5.0) -> None:
        self.r = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.p = prefix
        self.max_entries = max_entries
        self.ttl_ms = int(ttl_s * 1000)
        self.claim_ttl_ms = int(claim_ttl_s * 1000)
        self._claim = self.r.register_script(CLAIM_SCRIPT)

    def _entry(self, key: str) -> str:
        return f"{self.p}:c:{key}"

    async def _count(self, field: str, n: int = 1) -> None:
        await self.r.hincrby(f"{self.p}:stats", field, n)

    async def get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                  min_similarity: float = 1.0) -> CacheHit | None:
        raw = await self.r.get(self._entry(key))
        if raw is not None:
            await self.r.zadd(f"{self.p}:lru", {key: time.time()})
            await self._count("hits")
            return CacheHit(json.loads(raw))
        if group is not None and vector is not None:
            hit = await self._semantic(group, vector, min_similarity)
            if hit is not None:
                await self._count("semantic_hits")
                return hit
        await self._count("misses")
        return None

    async def _semantic(self, group: str, vector: np.ndarray, min_similarity: float) -> CacheHit | None:
        members = cast(dict[bytes, bytes], await self.r.hgetall(f"{self.p}:g:{group}"))
        ranked = sorted(
            ((float(np.dot(vector, np.frombuffer(v, dtype=np.float32))), k.decode()) for k, v in members.items()),
            reverse=True,
        )
        for similarity, key in ranked:
            if similarity < min_similarity:
                return None
            raw = await self.r.get(self._entry(key))
            if raw is not None:
                return CacheHit(json.loads(raw), round(similarity, 4))
            await self.r.hdel(f"{self.p}:g:{group}", key)  # expired or evicted
        return None

    async def put(self, key: str, value: dict[str, Any], group: str | None = None,
                  vector: np.ndarray | None = None) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self._entry(key), json.dumps(value), px=self.ttl_ms)
            pipe.zadd(f"{self.p}:lru", {key: time.time()})
            if group is not None and vector is not None:
                pipe.hset(f"{self.p}:g:{group}", key, np.asarray(vector, dtype=np.float32).tobytes())
                pipe.pexpire(f"{self.p}:g:{group}", self.ttl_ms)
            pipe.delete(f"{self.p}:f:{key}")
            await pipe.execute()
        await self._trim()

    async def _trim(self) -> None:
        excess = await self.r.zcard(f"{self.p}:lru") - self.max_entries
        if excess > 0:
            popped = cast(list[tuple[bytes, float]], await self.r.zpopmin(f"{self.p}:lru", excess))
            oldest = [k.decode() for k, _ in popped]
            await self.r.delete(*[self._entry(k) for k in oldest])
            await self._count("evictions", len(oldest))

    async def claim(self, key: str) -> ClaimResult:
        # Atomic, so an answer stored between the two checks cannot make a second leader.
        won = await self._claim(keys=[self._entry(key), f"{self.p}:f:{key}"], args=[self.claim_ttl_ms])
        return "leader" if won else "follower"

    async def release(self, key: str) -> None:
        await self.r.delete(f"{self.p}:f:{key}")

    async def wait(self, key: str, timeout_s: float) -> CacheHit | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # One snapshot of both: `put` stores the answer and ends the claim atomically,
            # so reading them apart could see neither and take the leader for gone.
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.get(self._entry(key))
                pipe.exists(f"{self.p}:f:{key}")
                raw, claimed = await pipe.execute()
            if raw is not None:
                await self._count("dedup_hits")
                return CacheHit(json.loads(raw))
            if not claimed:
                return None  # the leader gave up: generate yourself
            await asyncio.sleep(POLL_S)
        return None

    async def clear(self, scope: str | None = None) -> int:
        # The scope is escaped: a user id with `*`, `?` or `[` must match only itself.
        pattern = f"{glob_escape(scope)}:*" if scope else "*"
        removed = 0
        async for name in self.r.scan_iter(match=f"{self.p}:c:{pattern}", count=1000):
            removed += await self.r.delete(name)
            await self.r.zrem(f"{self.p}:lru", cast(bytes, name).decode().removeprefix(f"{self.p}:c:"))
        async for name in self.r.scan_iter(match=f"{self.p}:g:{pattern}", count=1000):
            await self.r.delete(name)
        return removed

    async def stats(self) -> dict[str, float]:
        # Drop LRU members whose entries expired, so `entries` counts live answers.
        members = [k.decode() for k in cast(list[bytes], await self.r.zrange(f"{self.p}:lru", 0, -1))]
        if members:
            async with self.r.pipeline(transaction=False) as pipe:
                for k in members:
                    pipe.exists(self._entry(k))
                flags = await pipe.execute()
            dead = [k for k, alive in zip(members, flags, strict=True) if not alive]
            if dead:
                await self.r.zrem(f"{self.p}:lru", *dead)
        raw = cast(dict[bytes, bytes], await self.r.hgetall(f"{self.p}:stats"))
        counts = {k.decode(): int(v) for k, v in raw.items()}
        hits, semantic, misses = counts.get("hits", 0), counts.get("semantic_hits", 0), counts.get("misses", 0)
        total = hits + semantic + misses
        return {
            "hits": hits, "semantic_hits": semantic, "misses": misses, "dedup_hits": counts.get("dedup_hits", 0),
            "evictions": counts.get("evictions", 0), "entries": await self.r.zcard(f"{self.p}:lru"),
            "hit_rate": round((hits + semantic) / total, 4) if total else 0.0,
        }
