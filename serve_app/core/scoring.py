"""How relevant memories are ranked: relevance x importance x recency decay x time match."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from serve_app.core.store import MemoryRecord

DAY_S = 86_400.0


class ScoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 0: importance is ignored; 1: a memory of importance 0 never ranks.
    importance_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    # Recency decay of the tiers whose policy says `decays` (episodic by default):
    # exp(-decay_per_day x days since the memory's event occurred), the design's 0.05.
    decay_per_day: float = Field(default=0.05, ge=0.0)
    # Dense-only retrieval when false; otherwise dense and BM25 rankings are fused (RRF).
    hybrid: bool = True
    # BM25 with pseudo-relevance feedback (RM3, at Anserini's defaults): the query's terms
    # plus the distinctive terms of its best BM25 hits, searched again, instead of plain BM25.
    # Found LoCoMo evidence for more questions in the top 10 (see the README), but
    # over a few memories it can rank a memory that restates the query below another one, so
    # it is off by default. Costs one more BM25 pass.
    lexical_feedback: bool = False
    # A query that names a time ("in May 2023", "yesterday", "before the trip") multiplies the
    # score of memories whose event time falls in it by 1 + time_boost: a preference, not a
    # filter (send filters.occurred_after/before for that). 0 turns it off.
    time_boost: float = Field(default=1.0, ge=0.0)


def importance_factor(importance: float, weight: float) -> float:
    return 1.0 - weight + weight * importance


def recency_decay(record: MemoryRecord, now: float, s: ScoringSettings, decays: bool) -> float:
    """exp(-rate x days since it occurred) for a decaying tier; an event in the future has not faded."""
    if not decays:
        return 1.0
    days = max(0.0, now - record.event_time) / DAY_S
    return math.exp(-s.decay_per_day * days)


def memory_score(
    relevance: float, record: MemoryRecord, now: float, s: ScoringSettings, decays: bool, in_time: bool = False
) -> float:
    """`decays`: whether the record's tier fades with age (`TierRegistry.decays`); `in_time`:
    whether its event time is in the time the query names."""
    boost = 1.0 + s.time_boost if in_time else 1.0
    return (relevance * importance_factor(record.importance, s.importance_weight)
            * recency_decay(record, now, s, decays) * boost)
