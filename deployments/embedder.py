"""Embedder deployment: a sentence encoder (`serve_app.encoders`) behind `@serve.batch` and an LRU cache."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

import numpy as np
from ray import serve

from serve_app.core.embedding_cache import EmbeddingCache
from serve_app.encoders import open_encoder
from serve_app.settings import EmbedderSettings

logger = logging.getLogger("ray.serve")


class _BatchSettings(Protocol):
    """The setters `@serve.batch` attaches to the method it wraps (absent from its stub)."""

    def set_max_batch_size(self, new_max_batch_size: int) -> None: ...
    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None: ...


@serve.deployment(name="Embedder", ray_actor_options={"num_cpus": 0.25})
class Embedder:
    def __init__(self, settings: EmbedderSettings) -> None:
        self.settings = settings
        self.model = open_encoder(settings.model, settings.backend, settings.device, settings.num_threads)
        self.dim = self.model.dimension
        if self.dim != settings.dimension:
            raise ValueError(f"{settings.model} gives {self.dim}-d vectors; set embedder.dimension: {self.dim}")
        self.cache = EmbeddingCache(settings.cache_size)
        batching = cast(_BatchSettings, self._embed_batch)
        batching.set_max_batch_size(settings.max_batch_size)
        batching.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.model.encode(["warm up"], 1)
        logger.info("Embedder: %s on %s (threads: %s)", settings.model, settings.backend,
                    settings.num_threads or "default")

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode([t[: self.settings.max_input_chars] for t in texts], self.settings.max_batch_size)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.001)
    async def _embed_batch(self, texts: list[str]) -> list[np.ndarray]:
        # Each caller contributes one text; concurrent callers share one forward pass.
        vectors = await asyncio.to_thread(self._encode, texts)
        return list(vectors)

    async def embed(self, texts: list[str], namespace: str | None = None) -> np.ndarray:
        """Normalized float32 vectors, shape (len(texts), dim); `namespace` (a tenant's)
        keeps the cache entries apart, the batches are shared."""
        found, missing = self.cache.lookup(texts, namespace)
        if missing:
            fresh = await asyncio.gather(*(self._embed_batch(texts[i]) for i in missing))
            for i, vector in zip(missing, fresh, strict=True):
                self.cache.store(texts[i], vector, namespace)
                found[i] = vector
        return np.stack([found[i] for i in range(len(texts))]) if texts else np.empty((0, self.dim), np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        return self.model.count_tokens(texts)

    def stats(self) -> dict[str, int]:
        return self.cache.stats()
