"""Orchestrator deployment: the HTTP ingress. It owns no model; it fans each request out
to the other deployments through the handles the builder gives it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Histogram

from fastapi import FastAPI

from serve_app.api import build_runtime, create_app
from serve_app.core.index import shard_for
from serve_app.core.response_cache import CacheHit, ClaimResult
from serve_app.core.retrieval import SearchFilters
from serve_app.generation import GenerationChunk, GenerationRequest
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

# Milliseconds: cache hits and hops at the low end, whole generations at the high end.
LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000]


class RayMetricsSink:
    """Exports every stage and request timing to Ray's metrics (Prometheus, the Ray
    dashboard's Grafana panels) as `ray_memserve_operation_ms{operation=...}`; Ray adds the
    deployment and replica tags, so the replicas of a scaled Orchestrator add up there."""

    def __init__(self) -> None:
        self._histogram = Histogram(
            "memserve_operation_ms", description="memserve request stages and requests, in milliseconds",
            boundaries=LATENCY_BUCKETS_MS, tag_keys=("operation",),
        )

    def __call__(self, operation: str, value_ms: float) -> None:
        self._histogram.observe(value_ms, tags={"operation": operation})


class HandleServices:
    """`serve_app.services.Services` over Ray Serve deployment handles."""

    def __init__(
        self, embedder: DeploymentHandle, shards: list[DeploymentHandle], llm: DeploymentHandle,
        cache: DeploymentHandle, consolidator: DeploymentHandle,
    ) -> None:
        self.embedder = embedder
        self.shards = shards
        self.llm = llm.options(stream=True)
        self.cache = cache
        self.consolidator = consolidator

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await self.embedder.embed.remote(texts)

    async def count_embedding_tokens(self, texts: list[str]) -> int:
        return await self.embedder.count_tokens.remote(texts)

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
        target = self.shards[shard_for(user, len(self.shards)) if shard is None else shard]
        return await target.search.remote(user, query, k, filters, min_seq, query_text)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    async def nearest_memories(self, user: str, vectors: np.ndarray) -> list[tuple[str | None, float]]:
        return await self.shards[shard_for(user, len(self.shards))].nearest.remote(user, vectors)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        return self.llm.generate.remote(request)

    async def cache_get(self, key: str, group: str | None = None, vector: np.ndarray | None = None,
                        min_similarity: float = 1.0) -> CacheHit | None:
        return await self.cache.get.remote(key, group, vector, min_similarity)

    async def cache_put(self, key: str, value: dict[str, Any], group: str | None = None,
                        vector: np.ndarray | None = None) -> None:
        await self.cache.put.remote(key, value, group, vector)

    async def cache_claim(self, key: str) -> ClaimResult:
        return await self.cache.claim.remote(key)

    async def cache_release(self, key: str) -> None:
        await self.cache.release.remote(key)

    async def cache_wait(self, key: str, timeout_s: float) -> CacheHit | None:
        return await self.cache.wait.remote(key, timeout_s)

    async def cache_stats(self) -> dict[str, float]:
        return await self.cache.stats.remote()

    async def cache_clear(self, scope: str | None) -> int:
        return await self.cache.clear.remote(scope)

    async def deployment_stats(self) -> dict[str, Any]:
        embedder, *shards = await asyncio.gather(self.embedder.stats.remote(), *(s.stats.remote() for s in self.shards))
        return {"embedder_cache": embedder, "shards": shards}

    async def consolidate(self, user: str | None) -> dict[str, int]:
        return await self.consolidator.run.remote(user)

    async def consolidation_stats(self) -> dict[str, Any]:
        return await self.consolidator.stats.remote()


@serve.deployment(name="Orchestrator", ray_actor_options={"num_cpus": 0.25})
@serve.ingress()
class Orchestrator:
    def __init__(
        self,
        settings: AppSettings,
        embedder: DeploymentHandle,
        shards: list[DeploymentHandle],
        llm: DeploymentHandle,
        cache: DeploymentHandle,
        consolidator: DeploymentHandle,
    ) -> None:
        services = HandleServices(embedder, shards, llm, cache, consolidator)
        self.runtime = build_runtime(settings, services, settings.open_store(), len(shards), RayMetricsSink())
        logger.info("Orchestrator ready: %d shards", len(shards))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray Serve calls this after __init__: the app is built with this replica's runtime."""
        return create_app(self.runtime)
