"""How relevant memories are ranked: relevance x importance x recency decay."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve_app.core.store import MemoryRecord


class ScoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 0: importance is ignored; 1: a memory of importance 0 never ranks.
    importance_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    # Recency decay (half-life) of the tiers whose policy says `decays` (episodic by default).
    decay_half_life_s: float = Field(default=7 * 24 * 3600, gt=0)
    # Dense-only retrieval when false; otherwise dense and BM25 rankings are fused (RRF).
    hybrid: bool = True


def importance_factor(importance: float, weight: float) -> float:
    return 1.0 - weight + weight * importance


def recency_decay(record: MemoryRecord, now: float, s: ScoringSettings, decays: bool) -> float:
    if not decays:
        return 1.0
    age = max(0.0, now - record.created_at)
    return float(0.5 ** (age / s.decay_half_life_s))  # float ** float is typed Any (it may be complex)


def memory_score(relevance: float, record: MemoryRecord, now: float, s: ScoringSettings, decays: bool) -> float:
    """`decays`: whether the record's tier fades with age (`TierRegistry.decays`)."""
    return relevance * importance_factor(record.importance, s.importance_weight) * recency_decay(record, now, s, decays)
