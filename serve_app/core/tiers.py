"""Memory tiers: each has a capacity and a time-to-live (DESIGN.md, "Memory model")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TierPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cap: int = Field(ge=1)
    ttl_s: float | None = Field(default=None, gt=0, description="None: never expires")


def default_tier_policies() -> dict[str, TierPolicy]:
    return {
        "working": TierPolicy(cap=15, ttl_s=15 * 60),
        "short_term": TierPolicy(cap=100, ttl_s=60 * 60),
        "long_term": TierPolicy(cap=10_000, ttl_s=30 * 24 * 3600),
        "episodic": TierPolicy(cap=5_000, ttl_s=7 * 24 * 3600),
        "semantic": TierPolicy(cap=50_000, ttl_s=None),
    }


def expires_at(policies: dict[str, TierPolicy], tier: str, now: float) -> float | None:
    ttl = policies[tier].ttl_s
    return None if ttl is None else now + ttl
