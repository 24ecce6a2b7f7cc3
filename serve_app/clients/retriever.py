"""Client of the VectorSearch shards: routes each query to the shard that owns it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from serve_app.clients.endpoint import Endpoint
from serve_app.core.retrieval import NearMemory, SearchHit, ShardQuery
from serve_app.core.sharding import shard_for

NearestMatch = tuple[str | None, float]


class RetrieverClient:
    def __init__(self, shards: Sequence[Endpoint]) -> None:
        if not shards:
            raise ValueError("at least one VectorSearch shard is needed")
        self._shards = list(shards)

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def shard_of(self, namespace: str) -> int:
        return shard_for(namespace, len(self._shards))

    async def search(self, query: ShardQuery, shard: int | None = None) -> list[SearchHit]:
        """Search one namespace on its own shard, or on `shard` for namespaces spread over
        every shard (knowledge chunks)."""
        target = self._shards[self.shard_of(query.namespace) if shard is None else shard]
        hits: list[SearchHit] = await target.call("search", query)
        return hits

    async def nearest(self, user: str, vectors: np.ndarray) -> list[NearestMatch]:
        """For each vector, the user's most similar memory id and its cosine (None if empty)."""
        matches: list[NearestMatch] = await self._shards[self.shard_of(user)].call("nearest", user, vectors)
        return matches

    async def near(
        self, user: str, vectors: np.ndarray, texts: list[str], k: int, min_similarity: float
    ) -> list[list[NearMemory]]:
        """For each vector and its text, the user's memories a write may merge into: up to
        k with cosine >= min_similarity, most similar first."""
        found: list[list[NearMemory]] = await self._shards[self.shard_of(user)].call(
            "near", user, vectors, texts, k, min_similarity
        )
        return found

    async def stats(self) -> list[dict[str, Any]]:
        """Each shard's applied log position and loaded users."""
        return list(await asyncio.gather(*(shard.call("stats") for shard in self._shards)))
