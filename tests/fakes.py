"""Stand-ins for the other deployments, for unit tests of the request logic only.

The embedding is a deterministic bag-of-words hash so related texts are similar; the
"LLM" echoes the prompt's memory lines so tests can see what reached the prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.core.index import ShardIndex, shard_for
from serve_app.core.response_cache import CacheHit, ClaimResult, InProcessCache
from serve_app.core.retrieval import SearchFilters, as_result, nearest_memories, search_user_memories
from serve_app.core.sqlite_store import SQLiteMemoryStore
from serve_app.maintenance import TierMaintainer
from serve_app.settings import MemorySettings
from serve_app.generation import GenerationChunk, GenerationRequest, PromptTooLongError

DIM = 64


def bag_of_words(text: str) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for word in re.findall(r"[a-z]+", text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    n = np.linalg.norm(v)
    return v / n if n else v


class FakeServices:
    def __init__(self, store_path: Path, num_shards: int = 2) -> None:
        self.store = SQLiteMemoryStore(store_path)
        self.shards = [ShardIndex(self.store, i, DIM, 10) for i in range(num_shards)]
        self.cache = InProcessCache(100, 60)
        self.generate_delay_s = 0.0
        self.generations = 0
        self.embed_delay_s = 0.0
        self.fail_search = False
        self.last_request: GenerationRequest | None = None
        memory = MemorySettings()
        self.maintainer = TierMaintainer(self.store, memory.tiers, memory.consolidation, num_shards)

    async def embed(self, texts: list[str]) -> np.ndarray:
        await asyncio.sleep(self.embed_delay_s)
        return np.stack([bag_of_words(t) for t in texts])

    async def count_embedding_tokens(self, texts: list[str]) -> int:
        return sum(len(t.split()) for t in texts)

    async def search_memories(
        self, user: str, query: np.ndarray, k: int, filters: SearchFilters | None = None,
        min_seq: int | None = None, query_text: str | None = None, shard: int | None = None,
    ) -> list[dict[str, Any]]:
        if self.fail_search:
            raise RuntimeError("shard down")
        index = self.shards[shard_for(user, len(self.shards)) if shard is None else shard]
        return [as_result(m) for m in search_user_memories(index, user, query, k, time.time(), filters, query_text)]

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    async def nearest_memories(self, user: str, vectors: np.ndarray) -> list[tuple[str | None, float]]:
        return nearest_memories(self.shards[shard_for(user, len(self.shards))], user, vectors)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.generations += 1
        self.last_request = request
        if request.max_tokens and request.max_tokens > 1000:
            raise PromptTooLongError("too long")
        await asyncio.sleep(self.generate_delay_s)
        system = (request.messages or [{"content": request.prompt or ""}])[0]["content"]
        words = ["echo:"] + [line for line in system.splitlines() if line.startswith("- ")]
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield GenerationChunk(
                text=word + ("" if last else " "), finish_reason="stop" if last else None,
                prompt_tokens=7, completion_tokens=i + 1,
            )

    async def cache_get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                        min_similarity: float = 1.0) -> CacheHit | None:
        return await self.cache.get(key, group, vector, min_similarity)

    async def cache_put(self, key: str, value: dict[str, Any], group: str | None = None,
                        vector: np.ndarray | None = None) -> None:
        await self.cache.put(key, value, group, vector)

    async def cache_claim(self, key: str) -> ClaimResult:
        return await self.cache.claim(key)

    async def cache_release(self, key: str) -> None:
        await self.cache.release(key)

    async def cache_wait(self, key: str, timeout_s: float) -> CacheHit | None:
        return await self.cache.wait(key, timeout_s)

    async def cache_stats(self) -> dict[str, float]:
        return await self.cache.stats()

    async def cache_clear(self, scope: str | None) -> int:
        return await self.cache.clear(scope)

    async def deployment_stats(self) -> dict[str, Any]:
        return {"embedder_cache": {"hits": 0, "misses": 0, "entries": 0},
                "shards": [{"shard": i, "applied_seq": s.applied_seq, "loaded_users": s.loaded_users}
                           for i, s in enumerate(self.shards)]}

    async def consolidate(self, user: str | None) -> dict[str, int]:
        return self.maintainer.run(user)

    async def consolidation_stats(self) -> dict[str, Any]:
        return self.maintainer.stats.as_dict()
