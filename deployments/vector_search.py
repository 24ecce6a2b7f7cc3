"""VectorSearch deployment: the FAISS indexes of one shard, derived from the MemoryStore.

The builder binds this class once per shard (`VectorSearch_0`, `VectorSearch_1`, ...).
Every replica applies the shard's change log before it answers, so replicas agree with
each other and a caller that passes the `seq` of its write reads that write.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from ray import serve

from serve_app.core.index import ShardIndex
from serve_app.core.retrieval import search_user_memories
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

# How long a search waits for the log to reach a caller's `min_seq` before it fails.
MIN_SEQ_WAIT_S = 5.0


@serve.deployment(name="VectorSearch")
class VectorSearch:
    def __init__(self, settings: AppSettings, shard: int, dim: int = 384) -> None:
        self.shard = shard
        self.settings = settings
        store = settings.open_store()
        self.index = ShardIndex(store, shard, dim, settings.vector_search.max_loaded_users)
        # FAISS and SQLite calls run in a worker thread, one at a time per replica.
        self._lock = asyncio.Lock()
        logger.info("VectorSearch shard %d ready at seq %d", shard, self.index.applied_seq)

    async def _wait_for(self, min_seq: int | None) -> None:
        if not min_seq:
            return
        deadline = time.monotonic() + MIN_SEQ_WAIT_S
        while self.index.store.last_seq(None) < min_seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"shard {self.shard} has not seen seq {min_seq}")
            await asyncio.sleep(0.01)

    async def search(
        self,
        user: str,
        query: np.ndarray,
        k: int,
        tiers: list[str] | None = None,
        min_seq: int | None = None,
        min_similarity: float = -1.0,
    ) -> list[dict]:
        await self._wait_for(min_seq)
        async with self._lock:
            found = await asyncio.to_thread(
                search_user_memories, self.index, user, query, k, time.time(), tiers, min_similarity
            )
        return [
            {
                "id": m.record.id,
                "text": m.record.text,
                "score": m.score,
                "similarity": m.similarity,
                "tier": m.record.tier,
                "metadata": m.record.metadata,
                "created_at": m.record.created_at,
            }
            for m in found
        ]

    def stats(self) -> dict[str, int]:
        return {"shard": self.shard, "applied_seq": self.index.applied_seq, "loaded_users": self.index.loaded_users}
