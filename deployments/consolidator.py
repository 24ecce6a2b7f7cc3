"""Consolidator deployment: one replica that keeps every user's tiers within their rules
(expiry sweep, promotion, capacity) on an interval and on demand. Its methods (`run`,
`stats`) are those of `serve_app.maintenance.Consolidation`."""

from __future__ import annotations

import asyncio

from ray import serve

from serve_app.maintenance import Consolidation, TierMaintainer
from serve_app.settings import AppSettings


@serve.deployment(name="Consolidator", ray_actor_options={"num_cpus": 0.1})
class Consolidator(Consolidation):
    def __init__(self, settings: AppSettings) -> None:
        memory = settings.memory
        super().__init__(TierMaintainer(
            settings.open_store(), memory.tier_registry(), memory.consolidation, settings.vector_search.num_shards
        ))
        interval = memory.consolidation.interval_s
        self._loop = asyncio.get_event_loop().create_task(self.run_every(interval)) if interval else None

    def __del__(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
