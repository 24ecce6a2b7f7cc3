"""Client of the Embedder deployment."""

from __future__ import annotations

from typing import Any

import numpy as np

from serve_app.clients.endpoint import Endpoint


class EmbedderClient:
    def __init__(self, endpoint: Endpoint, namespace: str | None = None) -> None:
        self._endpoint = endpoint
        self.namespace = namespace  # a tenant's: the Embedder keeps its cache entries apart

    def scoped(self, namespace: str | None) -> EmbedderClient:
        return EmbedderClient(self._endpoint, namespace)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Normalized float32 vectors, one row per text."""
        args = (texts,) if self.namespace is None else (texts, self.namespace)
        vectors: np.ndarray = await self._endpoint.call("embed", *args)
        return vectors

    async def embed_one(self, text: str) -> np.ndarray:
        vectors = await self.embed([text])
        row: np.ndarray = vectors[0]
        return row

    async def count_tokens(self, texts: list[str]) -> int:
        """Tokens as the embedding model counts them (for `/v1/embeddings` usage)."""
        count: int = await self._endpoint.call("count_tokens", texts)
        return count

    async def stats(self) -> dict[str, Any]:
        """The embedding cache's counters."""
        stats: dict[str, Any] = await self._endpoint.call("stats")
        return stats
