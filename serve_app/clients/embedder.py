"""Client of the Embedder deployment."""

from __future__ import annotations

from typing import Any

import numpy as np

from serve_app.clients.endpoint import Endpoint


class EmbedderClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Normalized float32 vectors, one row per text."""
        vectors: np.ndarray = await self._endpoint.call("embed", texts)
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
