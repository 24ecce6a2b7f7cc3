"""What the request logic needs from the rest of the graph, as a protocol.

The Orchestrator deployment implements it over Ray Serve handles; unit tests implement it
with plain objects, so the pipeline is tested without Ray.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import numpy as np

from serve_app.core.response_cache import CacheHit, ClaimResult
from serve_app.core.retrieval import SearchFilters
from serve_app.generation import GenerationChunk, GenerationRequest


class Services(Protocol):
    async def embed(self, texts: list[str]) -> np.ndarray: ...

    async def count_embedding_tokens(self, texts: list[str]) -> int: ...

    async def search_memories(
        self,
        user: str,
        query: np.ndarray,
        k: int,
        filters: SearchFilters | None = None,
        min_seq: int | None = None,
        query_text: str | None = None,
        shard: int | None = None,
    ) -> list[dict[str, Any]]:
        """Search one namespace on its shard (by default the one its name hashes to)."""
        ...

    @property
    def num_shards(self) -> int: ...

    async def nearest_memories(self, user: str, vectors: np.ndarray) -> list[tuple[str | None, float]]:
        """For each vector, the user's most similar memory id and its cosine (None if empty)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def cache_get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                        min_similarity: float = 1.0) -> CacheHit | None: ...

    async def cache_put(self, key: str, value: dict[str, Any], group: str | None = None,
                        vector: np.ndarray | None = None) -> None: ...

    async def cache_claim(self, key: str) -> ClaimResult: ...

    async def cache_release(self, key: str) -> None: ...

    async def cache_wait(self, key: str, timeout_s: float) -> CacheHit | None: ...

    async def cache_stats(self) -> dict[str, float]: ...

    async def cache_clear(self, scope: str | None) -> int: ...

    async def deployment_stats(self) -> dict[str, Any]:
        """Embedder cache counters and each shard's log position and loaded users."""
        ...

    async def consolidate(self, user: str | None) -> dict[str, int]: ...

    async def consolidation_stats(self) -> dict[str, Any]: ...
