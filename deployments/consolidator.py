"""Consolidator deployment: one replica that keeps every user's tiers within their rules
(expiry sweep, promotion, capacity) on an interval and on demand."""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from serve_app.maintenance import TierMaintainer
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Consolidator", ray_actor_options={"num_cpus": 0.1})
class Consolidator:
    def __init__(self, settings: AppSettings) -> None:
        memory = settings.memory
        self.maintainer = TierMaintainer(
            settings.open_store(), memory.tiers, memory.consolidation, settings.vector_search.num_shards
        )
        self._lock = asyncio.Lock()
        interval = memory.consolidation.interval_s
        self._loop = asyncio.get_event_loop().create_task(self._every(interval)) if interval else None

    async def _every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                totals = await self.run()
                logger.info("consolidation: %s", totals)
            except Exception:  # noqa: BLE001 - try again next interval
                logger.exception("consolidation failed")

    async def run(self, user: str | None = None) -> dict[str, int]:
        async with self._lock:
            return await asyncio.to_thread(self.maintainer.run, user)

    def stats(self) -> dict[str, object]:
        return self.maintainer.stats.as_dict()

    def __del__(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
