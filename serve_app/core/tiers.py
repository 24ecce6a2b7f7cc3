"""Memory tiers: the one registry of which tiers exist and what each one's rules are.

Each tier has a capacity, a time-to-live, where consolidation promotes its memories, and
whether its memories fade with age (DESIGN.md, "Memory model"). The registry is built from
`memory.tiers` in the settings and used by validation (the API), expiry, promotion and
scoring alike, so a tier added or removed in YAML is added or removed everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class TierPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cap: int = Field(ge=1)
    ttl_s: float | None = Field(default=None, gt=0, description="None: never expires")
    promote_to: str | None = Field(default=None, description="where consolidation moves a memory that earned it")
    decays: bool = Field(default=False, description="recency decay in ranking: episodes fade, facts do not")


def default_tier_policies() -> dict[str, TierPolicy]:
    return {
        "working": TierPolicy(cap=15, ttl_s=15 * 60, promote_to="short_term"),
        "short_term": TierPolicy(cap=100, ttl_s=60 * 60, promote_to="long_term"),
        "long_term": TierPolicy(cap=10_000, ttl_s=30 * 24 * 3600, promote_to="semantic"),
        "episodic": TierPolicy(cap=5_000, ttl_s=7 * 24 * 3600, promote_to="long_term", decays=True),
        "semantic": TierPolicy(cap=50_000, ttl_s=None),
    }


class UnknownTier(ValueError):
    """A request named a tier this server is not configured with (a 400, not a 500)."""


@dataclass(frozen=True)
class TierRegistry:
    policies: Mapping[str, TierPolicy]

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("at least one memory tier is needed")
        for name, policy in self.policies.items():
            if policy.promote_to is not None and policy.promote_to not in self.policies:
                raise ValueError(f"tier {name!r} promotes to {policy.promote_to!r}, which is not a tier")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.policies)

    def check(self, name: str) -> str:
        """`name` if it is a configured tier; UnknownTier otherwise."""
        if name not in self.policies:
            raise UnknownTier(f"unknown tier {name!r}; this server's tiers are {', '.join(self.names)}")
        return name

    def policy(self, name: str) -> TierPolicy:
        return self.policies[self.check(name)]

    def expires_at(self, name: str, now: float) -> float | None:
        ttl = self.policy(name).ttl_s
        return None if ttl is None else now + ttl

    def promotion_target(self, name: str) -> str | None:
        """None for a tier that is not (or no longer) configured: its memories stay put."""
        policy = self.policies.get(name)
        return None if policy is None else policy.promote_to

    def decays(self, name: str) -> bool:
        policy = self.policies.get(name)
        return policy is not None and policy.decays

    def cap(self, name: str) -> int | None:
        """None for a tier that is no longer configured: its memories are never evicted."""
        policy = self.policies.get(name)
        return None if policy is None else policy.cap
