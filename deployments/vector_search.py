"""VectorSearch deployment: the per-user indexes of one shard, derived from the MemoryStore.

The builder binds this class once per shard (`VectorSearch_0`, `VectorSearch_1`, ...).
Every replica applies the shard's change log before it answers, so replicas agree with
each other and a caller that passes the `seq` of its write reads that write. Changed
user indexes are snapshotted to `<data_dir>/snapshots/shard_<i>/` in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve

from serve_app.core.index import ShardIndex
from serve_app.core.retrieval import SearchFilters, as_result, nearest_memories, search_user_memories
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

# How long a search waits for the store to reach a caller's `min_seq` before it fails.
MIN_SEQ_WAIT_S = 5.0


@serve.deployment(name="VectorSearch", ray_actor_options={"num_cpus": 0.1})
class VectorSearch:
    def __init__(self, settings: AppSettings, shard: int, dim: int = 384) -> None:
        self.shard = shard
        self.settings = settings
        snapshots = settings.resolve_path(f"snapshots/shard_{shard}") if settings.vector_search.snapshot_interval_s else None
        self.index = ShardIndex(settings.open_store(), shard, dim, settings.vector_search.max_loaded_users, snapshots)
        # FAISS and store calls run in a worker thread, one at a time per replica.
        self._lock = asyncio.Lock()
        self._flusher = asyncio.get_event_loop().create_task(self._flush_periodically()) if snapshots else None
        logger.info("VectorSearch shard %d ready at seq %d", shard, self.index.applied_seq)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.vector_search.snapshot_interval_s)
            try:
                async with self._lock:
                    saved = await asyncio.to_thread(self.index.flush)
                if saved:
                    logger.info("shard %d: snapshotted %d user indexes", self.shard, saved)
            except Exception:  # noqa: BLE001 - snapshots are an optimisation; keep serving
                logger.exception("snapshot flush failed")

    async def _wait_for(self, min_seq: int | None) -> None:
        if not min_seq:
            return
        deadline = time.monotonic() + MIN_SEQ_WAIT_S
        while await asyncio.to_thread(self.index.store.last_seq, None) < min_seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"shard {self.shard} has not seen seq {min_seq}")
            await asyncio.sleep(0.01)

    async def search(
        self,
        user: str,
        query: np.ndarray,
        k: int,
        filters: SearchFilters | None = None,
        min_seq: int | None = None,
        query_text: str | None = None,
    ) -> list[dict[str, Any]]:
        await self._wait_for(min_seq)
        async with self._lock:
            found = await asyncio.to_thread(
                search_user_memories, self.index, user, query, k, time.time(), filters, query_text,
                self.settings.memory.scoring,
            )
        return [as_result(m) for m in found]

    async def nearest(self, user: str, vectors: np.ndarray) -> list[tuple[str | None, float]]:
        async with self._lock:
            return await asyncio.to_thread(nearest_memories, self.index, user, vectors)

    def stats(self) -> dict[str, int]:
        return {"shard": self.shard, "applied_seq": self.index.applied_seq, "loaded_users": self.index.loaded_users}

    def __del__(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        try:
            self.index.flush()
        except Exception:  # noqa: BLE001 - shutting down; the store has everything
            logger.exception("final snapshot flush failed")
