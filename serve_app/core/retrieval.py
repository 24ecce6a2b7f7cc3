"""Memory retrieval on one shard: candidates from the user's indexes, then the store's
records, filters and the final score; then, when asked, the memories connected to the
chosen ones (the turns around them in their session, memories related to them)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.core.index import ShardIndex
from serve_app.core.scoring import ScoringSettings, memory_score
from serve_app.core.store import ConnectionKind, MemoryRecord
from serve_app.core.temporal import TimeRange
from serve_app.core.tiers import TierRegistry, default_tier_policies

# Filters and re-scoring drop or reorder candidates, so ask the indexes for more than k.
OVERFETCH = 4
# A query naming a time looks deeper: the memories of that time may rank low on text alone.
TIME_OVERFETCH = 16


@dataclass(frozen=True)
class SearchFilters:
    tiers: Collection[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # equality on each key
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # numeric min/max
    created_after: float | None = None
    created_before: float | None = None
    occurred_after: float | None = None  # on the event time (`MemoryRecord.event_time`)
    occurred_before: float | None = None
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
        if self.occurred_after is not None and record.event_time < self.occurred_after:
            return False
        if self.occurred_before is not None and record.event_time > self.occurred_before:
            return False
        if not all(record.metadata.get(k) == v for k, v in self.metadata.items()):
            return False
        return all(_within(record.metadata.get(k), low, high) for k, (low, high) in self.ranges.items())

    @property
    def selective(self) -> bool:
        return bool(self.tiers or self.metadata or self.ranges or self.created_after is not None
                    or self.created_before is not None or self.occurred_after is not None
                    or self.occurred_before is not None)


def _within(value: Any, low: float | None, high: float | None) -> bool:
    if not isinstance(value, (int, float)):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


@dataclass(frozen=True)
class ScoredMemory:
    record: MemoryRecord
    similarity: float
    score: float
    connected_to: str | None = None  # set for a connected memory: the id of the result it hangs off
    connection: ConnectionKind | None = None


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
    time_range: TimeRange | None = None,
    connections: int = 0,
) -> list[ScoredMemory]:
    """The user's top k memories for the query, best first, then up to `connections`
    memories connected to them (`connected_memories`). `time_range`: the time the query
    names, preferred in ranking (`ScoringSettings.time_boost`)."""
    filters = filters or SearchFilters()
    scoring = scoring or ScoringSettings()
    tiers = tiers or TierRegistry(default_tier_policies())
    text = query_text if scoring.hybrid else None
    fetch = k * (TIME_OVERFETCH if time_range is not None and scoring.time_boost else OVERFETCH)
    while True:
        hits = index.search(user, query, fetch, text, feedback=scoring.lexical_feedback)
        records = index.store.get_many(user, (h.key for h in hits))
        found = [
            ScoredMemory(records[h.key], h.similarity, memory_score(
                h.fused, records[h.key], now, scoring, tiers.decays(records[h.key].tier),
                time_range is not None and time_range.contains(records[h.key].event_time)))
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
    return chosen + connected_memories(index, user, query, chosen, connections, filters, now)


def connected_memories(
    index: ShardIndex, user: str, query: np.ndarray, chosen: Sequence[ScoredMemory], limit: int,
    filters: SearchFilters, now: float,
) -> list[ScoredMemory]:
    """Up to `limit` of the user's memories connected to the chosen ones and not among
    them, the most similar to the query first, each marked with the result it hangs off
    (the best-ranked one, when several share it) and how. They pass the same filters,
    except the similarity floor: a connection is there for its context. Their `score` is
    their cosine to the query. The store answers only with the user's own memories."""
    if limit <= 0 or not chosen:
        return []
    links = index.store.connections(user, [m.record.key for m in chosen])
    taken = {m.record.key for m in chosen}
    via: dict[int, tuple[str, ConnectionKind]] = {}
    for m in chosen:
        for key, kind in links.get(m.record.key, []):
            if key not in taken and key not in via:
                via[key] = (m.record.id, kind)
    records = index.store.get_many(user, via)
    user_index = index.user(user)
    indexed = [key for key in via if key in records and key in user_index.texts
               and filters.accepts(records[key], 1.0, now)]
    similarity = user_index.similarities(query, indexed)
    best = sorted(indexed, key=lambda key: similarity[key], reverse=True)[:limit]
    return [ScoredMemory(records[key], similarity[key], similarity[key], *via[key]) for key in best]


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
    occurred_at: float | None = None
    session: str | None = None
    connected_to: str | None = None
    connection: ConnectionKind | None = None

    @classmethod
    def of(cls, m: ScoredMemory) -> SearchHit:
        r = m.record
        return cls(id=r.id, text=r.text, score=m.score, similarity=m.similarity, tier=r.tier,
                   metadata=r.metadata, created_at=r.created_at, occurred_at=r.event_time, session=r.session,
                   connected_to=m.connected_to, connection=m.connection)


@dataclass(frozen=True)
class ShardQuery:
    """A search of one namespace on one shard: what the retriever client sends."""

    namespace: str
    vector: np.ndarray
    k: int
    filters: SearchFilters | None = None
    text: str | None = None  # for the lexical half of hybrid search
    min_seq: int | None = None  # read-your-writes: wait until the shard has applied this
    time_range: TimeRange | None = None  # the time the query names (`core.temporal`), preferred in ranking
    connections: int = 0  # connected memories to return after the top k


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
