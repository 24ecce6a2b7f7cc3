"""The memory API's logic: writes go to the store (acknowledged after commit), searches to
the user's shard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from serve_app.core.index import shard_for
from serve_app.core.store import MemoryRecord, MemoryStore, NewMemory
from serve_app.core.tiers import TierPolicy, expires_at
from serve_app.core.retrieval import SearchFilters
from serve_app.protocol import MemoryIn, MemoryRecordOut, SearchMemoriesRequest, SearchResult
from serve_app.services import Services


def record_out(record: MemoryRecord) -> MemoryRecordOut:
    return MemoryRecordOut(
        id=record.id, text=record.text, tier=record.tier, importance=record.importance,
        metadata=record.metadata, created_at=record.created_at, updated_at=record.updated_at,
    )


class MemoryService:
    def __init__(
        self, store: MemoryStore, services: Services, num_shards: int, tiers: dict[str, TierPolicy]
    ) -> None:
        self.store = store
        self.services = services
        self.num_shards = num_shards
        self.tiers = tiers

    def shard(self, user: str) -> int:
        return shard_for(user, self.num_shards)

    async def add(
        self, user: str, items: Sequence[MemoryIn], vectors: np.ndarray | None = None
    ) -> tuple[list[str], int]:
        """Embed (unless the caller already has the vectors), commit, return ids and seq."""
        if vectors is None:
            vectors = await self.services.embed([item.text for item in items])
        now = time.time()
        new = [
            NewMemory(
                text=item.text, tier=item.tier, importance=item.importance, embedding=vector,
                metadata=item.metadata, expires_at=expires_at(self.tiers, item.tier, now),
            )
            for item, vector in zip(items, vectors)
        ]
        records, seq = await asyncio.to_thread(self.store.add, user, self.shard(user), new)
        return [r.id for r in records], seq

    async def search(self, request: SearchMemoriesRequest) -> list[SearchResult]:
        vector = (await self.services.embed([request.query]))[0]
        filters = SearchFilters(
            tiers=request.tiers, metadata=request.filters.metadata,
            created_after=request.filters.created_after, created_before=request.filters.created_before,
        )
        hits = await self.services.search_memories(
            request.user, vector, request.k, filters, min_seq=request.min_seq, query_text=request.query
        )
        return [SearchResult(**{f: h[f] for f in SearchResult.model_fields}) for h in hits]

    async def get(self, user: str, memory_id: str) -> MemoryRecordOut | None:
        record = await asyncio.to_thread(self.store.get, user, memory_id)
        return None if record is None or record.expired(time.time()) else record_out(record)

    async def list(
        self, user: str, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[MemoryRecordOut], str | None]:
        after = int(cursor) if cursor else None
        records = await asyncio.to_thread(self.store.list, user, tier, limit + 1, after)
        page, more = records[:limit], len(records) > limit
        now = time.time()
        return [record_out(r) for r in page if not r.expired(now)], (str(page[-1].key) if more else None)

    async def delete(self, user: str, memory_id: str) -> int | None:
        return await asyncio.to_thread(self.store.delete, user, self.shard(user), [memory_id])

    async def version(self, user: str) -> int:
        return await asyncio.to_thread(self.store.user_version, user)
