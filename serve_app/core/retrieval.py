"""Memory retrieval on one shard: FAISS candidates, then store records, filters and scores."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from serve_app.core.index import ShardIndex
from serve_app.core.store import MemoryRecord

# FAISS returns candidates by similarity alone; filters (tier, expiry) and re-scoring can
# drop or reorder some, so ask for more than k.
OVERFETCH = 4


@dataclass(frozen=True)
class ScoredMemory:
    record: MemoryRecord
    similarity: float
    score: float


def search_user_memories(
    index: ShardIndex,
    user: str,
    query: np.ndarray,
    k: int,
    now: float,
    tiers: Collection[str] | None = None,
    min_similarity: float = -1.0,
) -> list[ScoredMemory]:
    hits = index.search(user, query, k * OVERFETCH)
    records = index.store.get_many(user, (h.key for h in hits))
    found: list[ScoredMemory] = []
    for hit in hits:
        record = records.get(hit.key)
        if record is None or record.expired(now) or hit.similarity < min_similarity:
            continue
        if tiers and record.tier not in tiers:
            continue
        found.append(ScoredMemory(record, hit.similarity, hit.similarity))
    found.sort(key=lambda m: m.score, reverse=True)
    chosen = found[:k]
    index.store.record_access(user, [m.record.key for m in chosen], now)
    return chosen
