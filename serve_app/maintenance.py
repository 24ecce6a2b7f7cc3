"""Keeps tiers within their rules: sweeps expired memories, evicts over-capacity ones and
promotes memories that earned it. Ray-free; the Consolidator deployment runs it on an
interval and on demand, and MemoryService runs the capacity check after each write."""

from __future__ import annotations

import asyncio
import logging
import time

from serve_app.core.consolidation import (
    ConsolidationSettings,
    ConsolidationStats,
    over_capacity,
    plan_promotions,
)
from serve_app.core.sharding import shard_for
from serve_app.core.store import MemoryPatch, MemoryStore
from serve_app.core.tiers import TierRegistry

logger = logging.getLogger(__name__)

ACTOR = "consolidator"


class TierMaintainer:
    def __init__(
        self, store: MemoryStore, tiers: TierRegistry, settings: ConsolidationSettings, num_shards: int
    ) -> None:
        self.store = store
        self.tiers = tiers
        self.settings = settings
        self.num_shards = num_shards
        self.stats = ConsolidationStats()

    def enforce_caps(self, user: str, now: float | None = None) -> int:
        """Evict the lowest-retention memories of any tier over its cap."""
        counts = self.store.tier_counts(user)
        if all(counts.get(t, 0) <= p.cap for t, p in self.tiers.policies.items()):
            return 0
        doomed = over_capacity(self.store.all_records(user), self.tiers, now or time.time())
        if doomed:
            self.store.delete(user, shard_for(user, self.num_shards), [r.id for r in doomed], ACTOR, "EVICT")
            self.stats.evicted += len(doomed)
        return len(doomed)

    def maintain_user(self, user: str, now: float | None = None) -> dict[str, int]:
        now = now or time.time()
        shard = shard_for(user, self.num_shards)
        records = self.store.all_records(user)
        expired = [r for r in records if r.expired(now)]
        if expired:
            self.store.delete(user, shard, [r.id for r in expired], ACTOR, "EXPIRE")
            self.stats.expired += len(expired)
        plan = plan_promotions([r for r in records if not r.expired(now)], now, self.tiers, self.settings)
        if plan:
            patches = [(p.record.id, MemoryPatch(tier=p.to_tier, expires_at=self.tiers.expires_at(p.to_tier, now)))
                       for p in plan]
            self.store.update(user, shard, patches, ACTOR, "PROMOTE")
            self.stats.promotions += len(plan)
            self.stats.by_tier.update(f"{p.record.tier}->{p.to_tier}" for p in plan)
        evicted = self.enforce_caps(user, now)
        return {"expired": len(expired), "promoted": len(plan), "evicted": evicted}

    def run(self, user: str | None = None) -> dict[str, int]:
        started = time.perf_counter()
        totals = {"users": 0, "expired": 0, "promoted": 0, "evicted": 0}
        # System namespaces ("__catalog__", "__kb__:...", "__docs__") follow their own rules.
        for name in [user] if user else [u for u in self.store.users() if not u.startswith("__")]:
            for key, value in self.maintain_user(name).items():
                totals[key] += value
            totals["users"] += 1
        self.stats.runs += 1
        self.stats.last_run_ms = (time.perf_counter() - started) * 1000
        return totals


class Consolidation:
    """What the Consolidator deployment does, without Ray: one pass at a time over the
    store, on demand (`run`) and on an interval (`run_every`)."""

    def __init__(self, maintainer: TierMaintainer) -> None:
        self.maintainer = maintainer
        self._lock = asyncio.Lock()

    async def run(self, user: str | None = None) -> dict[str, int]:
        async with self._lock:
            return await asyncio.to_thread(self.maintainer.run, user)

    def stats(self) -> dict[str, object]:
        return self.maintainer.stats.as_dict()

    async def run_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                logger.info("consolidation: %s", await self.run())
            except Exception:  # try again next interval
                logger.exception("consolidation failed")
