"""Memory retrieval on one shard: candidates from the user's indexes, then the store's
records, filters and the final score."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.core.index import ShardIndex
from serve_app.core.scoring import ScoringSettings, memory_score
from serve_app.core.store import MemoryRecord
from serve_app.core.tiers import TierRegistry, default_tier_policies

# Filters and re-scoring drop or reorder candidates, so ask the indexes for more than k.
OVERFETCH = 4


@dataclass(frozen=True)
class SearchFilters:
    tiers: Collection[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # equality on each key
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # numeric min/max
    created_after: float | None = None
    created_before: float | None = None
    min_similarity: float = -1.0

    def accepts(self, record: MemoryRecord, similarity: float, now: float) -> bool:
        if record.expired(now) or similarity < self.min_similarity:
            return False
        if self.tiers and record.tier not in self.tiers:
            return False
        if self.created_after is not None and record.created_at < self.created_after:
            return False
        if self.created_before is not None and record.created_at > self.created_before:
            return False
        if not all(record.metadata.get(k) == v for k, v in self.metadata.items()):
            return False
        return all(_within(record.metadata.get(k), low, high) for k, (low, high) in self.ranges.items())

    @property
    def selective(self) -> bool:
        return bool(self.tiers or self.metadata or self.ranges or self.created_after or self.created_before)


def _within(value: Any, low: float | None, high: float | None) -> bool:
    if not isinstance(value, (int, float)):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


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
    filters: SearchFilters | None = None,
    query_text: str | None = None,
    scoring: ScoringSettings | None = None,
    tiers: TierRegistry | None = None,
) -> list[ScoredMemory]:
    filters = filters or SearchFilters()
    scoring = scoring or ScoringSettings()
    tiers = tiers or TierRegistry(default_tier_policies())
    text = query_text if scoring.hybrid else None
    fetch = k * OVERFETCH
    while True:
        hits = index.search(user, query, fetch, text)
        records = index.store.get_many(user, (h.key for h in hits))
        found = [
            ScoredMemory(records[h.key], h.similarity, memory_score(h.fused, records[h.key], now, scoring,
                                                                tiers.decays(records[h.key].tier)))
            for h in hits
            if h.key in records and filters.accepts(records[h.key], h.similarity, now)
        ]
        # A selective filter may have discarded most candidates: widen the net.
        exhausted = fetch >= len(index.user(user))
        if len(found) >= k or exhausted or not filters.selective:
            break
        fetch *= 4
    found.sort(key=lambda m: m.score, reverse=True)
    chosen = found[:k]
    index.store.record_access(user, [m.record.key for m in chosen], now)
    return chosen


@dataclass(frozen=True)
class SearchHit:
    """One memory (or knowledge chunk) as a shard returns it across the Ray boundary:
    a plain frozen dataclass, cheap to pickle, read by attribute everywhere."""

    id: str
    text: str
    score: float
    similarity: float
    tier: str
    metadata: dict[str, Any]
    created_at: float

    @classmethod
    def of(cls, m: ScoredMemory) -> SearchHit:
        r = m.record
        return cls(id=r.id, text=r.text, score=m.score, similarity=m.similarity, tier=r.tier,
                   metadata=r.metadata, created_at=r.created_at)


@dataclass(frozen=True)
class ShardQuery:
    """A search of one namespace on one shard: what the retriever client sends."""

    namespace: str
    vector: np.ndarray
    k: int
    filters: SearchFilters | None = None
    text: str | None = None  # for the lexical half of hybrid search
    min_seq: int | None = None  # read-your-writes: wait until the shard has applied this


def nearest_memories(index: ShardIndex, user: str, vectors: np.ndarray) -> list[tuple[str | None, float]]:
    """Each vector's most similar memory of the user (for near-duplicate detection)."""
    index.catch_up()
    user_index = index.user(user)
    best = [user_index.dense_search(v, 1) for v in np.atleast_2d(vectors)]
    records = index.store.get_many(user, (hits[0][0] for hits in best if hits))
    return [
        (records[hits[0][0]].id, hits[0][1]) if hits and hits[0][0] in records else (None, 0.0)
        for hits in best
    ]


@dataclass(frozen=True)
class NearMemory:
    """One of the user's live memories close to a text about to be written."""

    record: MemoryRecord
    similarity: float  # cosine of the new text's vector and the memory's


def near_memories(
    index: ShardIndex, user: str, vectors: np.ndarray, texts: Sequence[str], k: int, min_similarity: float,
    now: float,
) -> list[list[NearMemory]]:
    """For each vector and its text, the user's unexpired memories with cosine at least
    `min_similarity` among the dense and BM25 top-k, most similar first.

    Several candidates, not just the nearest, because the nearest may state a different
    fact (another day, another number) while the second is the very same sentence; BM25
    because a repeat shares its numbers and names verbatim, which finds it even when many
    memories tie on cosine ("record number 1" .. "record number 170"). Expired memories
    are left out: merging into one would hide the new text with it.
    """
    found: list[list[NearMemory]] = []
    for vector, text in zip(np.atleast_2d(vectors), texts, strict=True):
        hits = [h for h in index.search(user, vector, k, text) if h.similarity >= min_similarity]
        records = index.store.get_many(user, (h.key for h in hits))
        near = [NearMemory(records[h.key], h.similarity) for h in hits
                if h.key in records and not records[h.key].expired(now)]
        found.append(sorted(near, key=lambda m: m.similarity, reverse=True))
    return found
