"""VectorSearch deployment: one shard's `ShardSearcher` (serve_app/shard_search.py) as a
Ray Serve replica; its public methods (`search`, `nearest`, `near`, `stats`) are the deployment's.

The builder binds this class once per shard (`VectorSearch_0`, `VectorSearch_1`, ...).
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from serve_app.settings import AppSettings
from serve_app.shard_search import ShardSearcher

logger = logging.getLogger("ray.serve")


@serve.deployment(name="VectorSearch", ray_actor_options={"num_cpus": 0.1})
class VectorSearch(ShardSearcher):
    def __init__(self, settings: AppSettings, shard: int) -> None:
        interval = settings.vector_search.snapshot_interval_s
        super().__init__(
            settings.open_store(), shard, settings.embedder.dimension, settings.vector_search.max_loaded_users,
            settings.memory.scoring, settings.memory.tier_registry(),
            settings.resolve_path(f"snapshots/shard_{shard}") if interval else None,
        )
        self._flusher = asyncio.get_event_loop().create_task(self.flush_every(interval)) if interval else None
        logger.info("VectorSearch shard %d ready at seq %d", shard, self.index.applied_seq)

    def __del__(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self.close()
