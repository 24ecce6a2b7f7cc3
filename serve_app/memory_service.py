"""The memory API's logic. Writes go to the store (acknowledged after commit), searches
to the user's shard. Near-duplicate writes update the existing memory instead of adding
a second one; a tier over its cap evicts its lowest-retention memories."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from serve_app.clients import CacheClient, EmbedderClient, RetrieverClient
from serve_app.core.retrieval import SearchFilters, ShardQuery
from serve_app.core.store import HistoryEvent, MemoryPatch, MemoryRecord, MemoryStore, NewMemory
from serve_app.maintenance import TierMaintainer
from serve_app.protocol import (
    MemoryIn,
    MemoryRecordOut,
    SearchMemoriesRequest,
    SearchResult,
    UpdateMemoryRequest,
)
from serve_app.settings import MemorySettings


def record_out(record: MemoryRecord) -> MemoryRecordOut:
    return MemoryRecordOut(
        id=record.id, text=record.text, tier=record.tier, importance=record.importance,
        metadata=record.metadata, created_at=record.created_at, updated_at=record.updated_at,
        access_count=record.access_count, expires_at=record.expires_at,
    )


def duplicates_within(vectors: np.ndarray, threshold: float) -> list[int | None]:
    """For each row, the index of an earlier row it nearly duplicates (or None)."""
    sims = vectors @ vectors.T
    first: list[int | None] = []
    for j in range(len(vectors)):
        earlier = [i for i in range(j) if first[i] is None and sims[i, j] >= threshold]
        first.append(earlier[0] if earlier else None)
    return first


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
    ) -> tuple[list[str], int]:
        """Embed (unless the caller has the vectors), merge near-duplicates, commit, and
        return one id per item (a merged item gets the id it merged into) and the seq."""
        for item in items:
            self.tier_of(item.tier)  # refuse an unknown tier before any work
        if vectors is None:
            vectors = await self.embedder.embed([item.text for item in items])
        in_batch = duplicates_within(vectors, self.settings.dedup_threshold) if dedup else [None] * len(items)
        existing: list[tuple[str | None, float]] = [(None, 0.0)] * len(items)
        if dedup:
            existing = await self.retriever.nearest(user, vectors)
        now = time.time()
        ids: list[str | None] = [None] * len(items)
        new_rows: list[int] = []
        merges: list[tuple[int, str]] = []
        for i in range(len(items)):
            match_id, similarity = existing[i]
            if in_batch[i] is not None:
                continue  # resolved to its earlier twin below
            if match_id is not None and similarity >= self.settings.dedup_threshold:
                merges.append((i, match_id))
            else:
                new_rows.append(i)
        seq = 0
        if new_rows:
            new = [self._new_memory(items[i], vectors[i], now) for i in new_rows]
            records, seq = await asyncio.to_thread(self.store.add, user, self.shard(user), new, actor)
            for i, record in zip(new_rows, records, strict=True):  # one record per new row
                ids[i] = record.id
        if merges:
            merged_ids, merge_seq = await self._merge(user, [(items[i], vectors[i], mid) for i, mid in merges], actor)
            for (i, _), memory_id in zip(merges, merged_ids, strict=True):
                ids[i] = memory_id
            seq = max(seq, merge_seq)
        for j, twin in enumerate(in_batch):
            if twin is not None:
                ids[j] = ids[twin]
        await asyncio.to_thread(self.maintainer.enforce_caps, user)
        return [i for i in ids if i is not None], seq

    def _new_memory(self, item: MemoryIn, vector: np.ndarray, now: float) -> NewMemory:
        tier = self.tier_of(item.tier)
        return NewMemory(text=item.text, tier=tier, importance=item.importance, embedding=vector,
                         metadata=item.metadata, expires_at=self.tiers.expires_at(tier, now))

    async def _merge(
        self, user: str, merges: list[tuple[MemoryIn, np.ndarray, str]], actor: str
    ) -> tuple[list[str], int]:
        """Update each matched memory with the newer text; importance only ever rises."""
        patches = []
        for item, vector, memory_id in merges:
            old = await asyncio.to_thread(self.store.get, user, memory_id)
            importance = max(item.importance, old.importance if old else 0.0)
            metadata = {**(old.metadata if old else {}), **item.metadata}
            patches.append((memory_id, MemoryPatch(text=item.text, embedding=vector, importance=importance,
                                                   metadata=metadata)))
        _, seq = await asyncio.to_thread(self.store.update, user, self.shard(user), patches, actor, "MERGE")
        return [memory_id for _, _, memory_id in merges], seq

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
