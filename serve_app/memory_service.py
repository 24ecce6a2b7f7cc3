"""The memory API's logic. Writes go to the store (acknowledged after commit), searches
to the user's shard. A write that restates one of the user's memories merges into it or,
word for word, changes nothing; one that differs in a fact (a day, a number, a name, a
negation) is added however close its embedding (`core.sameness`, `core.write_plan`). A
tier over its cap evicts its lowest-retention memories."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.clients import CacheClient, EmbedderClient, RetrieverClient
from serve_app.core.retrieval import NearMemory, SearchFilters, ShardQuery
from serve_app.core.store import HistoryEvent, MemoryPatch, MemoryRecord, MemoryStore, NewMemory
from serve_app.core.write_plan import Draft, Incoming, WriteOutcome, WritePlan, outcomes, plan_writes
from serve_app.maintenance import TierMaintainer
from serve_app.protocol import (
    MemoryIn,
    MemoryRecordOut,
    SearchMemoriesRequest,
    SearchResult,
    UpdateMemoryRequest,
)
from serve_app.settings import MemorySettings

# Existing memories judged per written item: enough to get past a few near ones that
# state other facts (other days, other numbers) to the one the item repeats.
NEAR_CANDIDATES = 8


@dataclass(frozen=True)
class WriteResult:
    """One `add`: each item's outcome, in order, and the seq that makes them readable."""

    outcomes: list[WriteOutcome]
    seq: int

    @property
    def ids(self) -> list[str]:
        return [o.id for o in self.outcomes]


def _patch(draft: Draft) -> MemoryPatch:
    """A MERGE's change to an existing memory; the text (and embedding) only when reworded."""
    return MemoryPatch(text=draft.text if draft.reembed else None, embedding=draft.vector if draft.reembed else None,
                       importance=draft.importance, metadata=draft.metadata)


def record_out(record: MemoryRecord) -> MemoryRecordOut:
    return MemoryRecordOut(
        id=record.id, text=record.text, tier=record.tier, importance=record.importance,
        metadata=record.metadata, created_at=record.created_at, updated_at=record.updated_at,
        access_count=record.access_count, expires_at=record.expires_at,
    )


class MemoryService:
    def __init__(
        self, store: MemoryStore, embedder: EmbedderClient, retriever: RetrieverClient, cache: CacheClient,
        settings: MemorySettings,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.retriever = retriever
        self.cache = cache
        self.settings = settings
        self.tiers = settings.tier_registry()
        self.maintainer = TierMaintainer(store, self.tiers, settings.consolidation, retriever.num_shards)

    def tier_of(self, requested: str | None) -> str:
        """The configured tier a request names, or the default one; UnknownTier (a 400)
        for a tier this server does not have."""
        return self.tiers.check(requested or self.settings.default_tier)

    def shard(self, user: str) -> int:
        return self.retriever.shard_of(user)

    # ------------------------------------------------------------------ writes

    async def add(
        self, user: str, items: Sequence[MemoryIn], vectors: np.ndarray | None = None, dedup: bool = True,
        actor: str = "api",
    ) -> WriteResult:
        """Embed (unless the caller has the vectors), decide per item whether it adds a
        memory, merges into one that states the same fact, or repeats one (NOOP; see
        `core.write_plan`), commit, and report each item's outcome and the seq to read at."""
        tiers = [self.tier_of(item.tier) for item in items]  # refuse an unknown tier before any work
        if vectors is None:
            vectors = await self.embedder.embed([item.text for item in items])
        incoming = [Incoming(item.text, tier, item.importance, vector, item.metadata)
                    for item, tier, vector in zip(items, tiers, vectors, strict=True)]
        near: list[list[NearMemory]] = [[] for _ in items]
        if dedup:
            near = await self.retriever.near(user, vectors, [item.text for item in items], NEAR_CANDIDATES,
                                             self.settings.dedup_threshold)
        plan = plan_writes(incoming, near, self.settings.dedup_threshold, dedup)
        ids, gone, seq = await asyncio.to_thread(self._commit, user, plan, actor)
        await asyncio.to_thread(self.maintainer.enforce_caps, user)
        return WriteResult(outcomes(plan, ids, gone), seq)

    def _commit(self, user: str, plan: WritePlan, actor: str) -> tuple[list[str], set[int], int]:
        """Run a plan: MERGE-update the existing memories it changes, check that the ones
        it only repeats still exist, then add the new drafts and those whose memory was
        deleted since the candidates were read (the fact is added, never dropped).
        Returns each draft's id, the vanished drafts, and the seq to read at: the last
        write's, or the user's version when nothing was written (every item a NOOP)."""
        now, shard = time.time(), self.shard(user)
        ids = [d.target.id if d.target is not None else "" for d in plan.drafts]
        updates = [i for i, d in enumerate(plan.drafts) if d.target is not None and d.changed]
        seq = 0
        if updates:
            patches = [(ids[i], _patch(plan.drafts[i])) for i in updates]
            records, seq = self.store.update(user, shard, patches, actor, "MERGE")
            done = {r.id for r in records}
            gone = {i for i in updates if ids[i] not in done}
        else:
            gone = set()
        for i, draft in enumerate(plan.drafts):
            if draft.target is not None and not draft.changed:
                record = self.store.get(user, ids[i])
                if record is None or record.expired(now):
                    gone.add(i)
        repeated = [d.target.key for i, d in enumerate(plan.drafts) if d.target is not None and i not in gone]
        self.store.record_access(user, repeated, now)  # restating a memory counts as using it
        fresh = [i for i, d in enumerate(plan.drafts) if d.target is None or i in gone]
        if fresh:
            new = [self._new_memory(plan.drafts[i], now) for i in fresh]
            records, add_seq = self.store.add(user, shard, new, actor)
            for i, record in zip(fresh, records, strict=True):  # one record per new draft
                ids[i] = record.id
            seq = max(seq, add_seq)
        return ids, gone, seq or self.store.user_version(user)

    def _new_memory(self, draft: Draft, now: float) -> NewMemory:
        return NewMemory(text=draft.text, tier=draft.tier, importance=draft.importance, embedding=draft.vector,
                         metadata=draft.metadata, expires_at=self.tiers.expires_at(draft.tier, now))

    async def update(self, memory_id: str, request: UpdateMemoryRequest) -> tuple[MemoryRecordOut, int] | None:
        tier_expiry = self.tiers.expires_at(request.tier, time.time()) if request.tier else None
        embedding = None if request.text is None else await self.embedder.embed_one(request.text)
        patch = MemoryPatch(text=request.text, embedding=embedding, importance=request.importance,
                            metadata=request.metadata, tier=request.tier, expires_at=tier_expiry)
        records, seq = await asyncio.to_thread(
            self.store.update, request.user, self.shard(request.user), [(memory_id, patch)]
        )
        if not records:
            return None
        await asyncio.to_thread(self.maintainer.enforce_caps, request.user)
        return record_out(records[0]), seq

    async def delete(self, user: str, memory_id: str) -> int | None:
        return await asyncio.to_thread(self.store.delete, user, self.shard(user), [memory_id])

    async def forget(self, user: str) -> int:
        """Every trace of the user: records, history, log entries, index entries and
        snapshots (replicas act on the `forget` log marker), and cached answers."""
        seq = await asyncio.to_thread(self.store.forget_user, user, self.shard(user))
        await self.cache.clear(f"user:{user}")
        return seq

    # ------------------------------------------------------------------ reads

    async def search(self, request: SearchMemoriesRequest) -> list[SearchResult]:
        filters = SearchFilters(
            tiers=[self.tiers.check(t) for t in request.tiers] if request.tiers else None,
            metadata=request.filters.metadata,
            created_after=request.filters.created_after, created_before=request.filters.created_before,
        )
        query = ShardQuery(request.user, await self.embedder.embed_one(request.query), request.k, filters,
                           request.query, request.min_seq)
        return [SearchResult.of(hit) for hit in await self.retriever.search(query)]

    async def get(self, user: str, memory_id: str) -> MemoryRecordOut | None:
        record = await asyncio.to_thread(self.store.get, user, memory_id)
        return None if record is None or record.expired(time.time()) else record_out(record)

    async def page(
        self, user: str, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[MemoryRecordOut], str | None]:
        if tier is not None:
            self.tiers.check(tier)
        after = int(cursor) if cursor else None
        records = await asyncio.to_thread(self.store.list, user, tier, limit + 1, after)
        page, more = records[:limit], len(records) > limit
        now = time.time()
        return [record_out(r) for r in page if not r.expired(now)], (str(page[-1].key) if more else None)

    async def history(self, user: str, memory_id: str) -> list[HistoryEvent]:
        return await asyncio.to_thread(self.store.history, user, memory_id)

    async def stats(self, user: str) -> dict[str, Any]:
        counts = await asyncio.to_thread(self.store.tier_counts, user)
        return {
            "user": user, "total": sum(counts.values()),
            "tiers": {t: {"count": counts.get(t, 0), "cap": p.cap, "ttl_s": p.ttl_s}
                      for t, p in self.tiers.policies.items()},
        }

    async def version(self, user: str) -> int:
        return await asyncio.to_thread(self.store.user_version, user)
