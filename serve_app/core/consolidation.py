"""Tier maintenance: promotion (consolidation), expiry and capacity eviction.

Pure functions over records; the Consolidator deployment applies their plans to the
store in one batched commit per user.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from serve_app.core.scoring import importance_factor
from serve_app.core.store import MemoryRecord
from serve_app.core.tiers import TierPolicy, TierRegistry


class ConsolidationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=300.0, ge=0, description="0: only on demand")
    threshold: float = Field(default=0.75, ge=0, le=1)
    importance_weight: float = 0.5
    frequency_weight: float = 0.3
    age_weight: float = 0.2
    # Accesses at which the frequency signal saturates. Where a promoted memory goes is
    # each tier's `promote_to` (serve_app.core.tiers).
    access_saturation: int = Field(default=5, ge=1)


def promotion_score(record: MemoryRecord, now: float, policy: TierPolicy, s: ConsolidationSettings) -> float:
    """Weighted importance, access frequency and age (relative to the tier's TTL, or a
    day where the tier never expires), each in [0, 1]."""
    frequency = min(1.0, record.access_count / s.access_saturation)
    horizon = policy.ttl_s or 24 * 3600
    age = min(1.0, max(0.0, now - record.created_at) / horizon)
    total = s.importance_weight + s.frequency_weight + s.age_weight
    return (s.importance_weight * record.importance + s.frequency_weight * frequency + s.age_weight * age) / total


@dataclass(frozen=True)
class Promotion:
    record: MemoryRecord
    to_tier: str
    score: float


def plan_promotions(
    records: Sequence[MemoryRecord], now: float, tiers: TierRegistry, s: ConsolidationSettings
) -> list[Promotion]:
    plan = []
    for record in records:
        target = tiers.promotion_target(record.tier)
        if target is None or record.expired(now):
            continue
        score = promotion_score(record, now, tiers.policy(record.tier), s)
        if score >= s.threshold:
            plan.append(Promotion(record, target, score))
    return plan


def retention_score(record: MemoryRecord, now: float) -> float:
    """What a full tier keeps: important, often used, recently used memories."""
    last_use = record.last_accessed or record.created_at
    idle_days = max(0.0, now - last_use) / 86_400
    return importance_factor(record.importance, 0.5) * (1 + math.log1p(record.access_count)) / (1 + idle_days)


def over_capacity(records: Sequence[MemoryRecord], tiers: TierRegistry, now: float) -> list[MemoryRecord]:
    """The lowest-retention memories that push a tier past its cap."""
    by_tier: dict[str, list[MemoryRecord]] = {}
    for record in records:
        by_tier.setdefault(record.tier, []).append(record)
    doomed: list[MemoryRecord] = []
    for tier, members in by_tier.items():
        cap = tiers.cap(tier)
        if cap is not None and len(members) > cap:
            members.sort(key=lambda r: retention_score(r, now))
            doomed += members[: len(members) - cap]
    return doomed


@dataclass
class ConsolidationStats:
    runs: int = 0
    promotions: int = 0
    expired: int = 0
    evicted: int = 0
    by_tier: Counter[str] = field(default_factory=Counter)
    last_run_ms: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"runs": self.runs, "total_promotions": self.promotions, "promotions_by_tier": dict(self.by_tier),
                "expired": self.expired, "evicted": self.evicted, "last_run_ms": round(self.last_run_ms, 2)}
