"""What one VectorSearch replica does, without Ray: the per-user indexes of one shard,
derived from the MemoryStore.

Every search first applies the shard's change log, so replicas agree with each other, and
a caller that passes the `seq` of its write (`min_seq`) reads that write. FAISS and store
calls run in a worker thread, one at a time per replica. Changed user indexes are
snapshotted to disk in the background when a snapshot directory is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np

from serve_app.core.index import ShardIndex
from serve_app.core.retrieval import (
    NearMemory,
    SearchHit,
    ShardQuery,
    near_memories,
    nearest_memories,
    search_user_memories,
)
from serve_app.core.scoring import ScoringSettings
from serve_app.core.store import MemoryStore
from serve_app.core.tiers import TierRegistry

logger = logging.getLogger(__name__)

# How long a search waits for the store to reach a caller's `min_seq` before it fails.
MIN_SEQ_WAIT_S = 5.0


class ShardSearcher:
    def __init__(
        self, store: MemoryStore, shard: int, dim: int, max_loaded_users: int,
        scoring: ScoringSettings | None = None, tiers: TierRegistry | None = None, snapshots: Path | None = None,
    ) -> None:
        self.shard = shard
        self.scoring = scoring or ScoringSettings()
        self.tiers = tiers
        self.index = ShardIndex(store, shard, dim, max_loaded_users, snapshots)
        self._lock = asyncio.Lock()

    async def search(self, query: ShardQuery) -> list[SearchHit]:
        await self._wait_for(query.min_seq)
        async with self._lock:
            found = await asyncio.to_thread(
                search_user_memories, self.index, query.namespace, query.vector, query.k, time.time(),
                query.filters, query.text, self.scoring, self.tiers, query.time_range, query.connections,
            )
        return [SearchHit.of(m) for m in found]

    async def nearest(self, user: str, vectors: np.ndarray) -> list[tuple[str | None, float]]:
        async with self._lock:
            return await asyncio.to_thread(nearest_memories, self.index, user, vectors)

    async def near(
        self, user: str, vectors: np.ndarray, texts: list[str], k: int, min_similarity: float
    ) -> list[list[NearMemory]]:
        """Candidates a write may merge into (see `near_memories`)."""
        async with self._lock:
            return await asyncio.to_thread(
                near_memories, self.index, user, vectors, texts, k, min_similarity, time.time()
            )

    def stats(self) -> dict[str, int]:
        return {"shard": self.shard, "applied_seq": self.index.applied_seq, "loaded_users": self.index.loaded_users}

    async def flush_every(self, interval_s: float) -> None:
        """Snapshot changed user indexes forever; snapshots only save start-up time, so a
        failure is logged and retried at the next interval."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                async with self._lock:
                    saved = await asyncio.to_thread(self.index.flush)
                if saved:
                    logger.info("shard %d: snapshotted %d user indexes", self.shard, saved)
            except Exception:  # snapshots are an optimisation; keep serving
                logger.exception("snapshot flush failed")

    def close(self) -> None:
        try:
            self.index.flush()
        except Exception:  # shutting down; the store has everything
            logger.exception("final snapshot flush failed")

    async def _wait_for(self, min_seq: int | None) -> None:
        if not min_seq:
            return
        deadline = time.monotonic() + MIN_SEQ_WAIT_S
        while await asyncio.to_thread(self.index.store.last_seq, None) < min_seq:
            if time.monotonic() > deadline:
                raise TimeoutError(f"shard {self.shard} has not seen seq {min_seq}")
            await asyncio.sleep(0.01)
