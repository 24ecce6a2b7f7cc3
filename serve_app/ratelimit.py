"""Per-API-key rate limits: one token bucket per key, checked by the auth middleware
(`serve_app.auth.TenantAuth`) before a request does any work.

Scope, plainly: the buckets live in the memory of ONE Orchestrator replica. Ray Serve's
proxy spreads requests over the replicas, so with R replicas a key can get up to R times
its limit in all (R is 1-2 in `configs/local.yaml`); a replica that restarts starts with
full buckets. That bounds what one key can do to one replica (the point: one tenant
cannot starve the others of a replica's event loop), it is not a global quota. A global
limit needs a shared counter (e.g. Redis INCR with expiry per key and second) on every
request: one more network round trip, not paid here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from serve_app.settings import RateLimitSettings


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; a request takes one."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = float(burst), now

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one will be there."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """The buckets of this replica, by key digest. Only keys that authenticated get a
    bucket, so their number is bounded by the configured keys."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, limit: RateLimitSettings | None) -> float:
        """0.0 if the request may go on, else how long to wait (seconds) before retrying."""
        if limit is None:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None or (bucket.rate, bucket.burst) != (limit.requests_per_s, limit.burst):
            bucket = self._buckets[key] = TokenBucket(limit.requests_per_s, limit.burst, now)
        return bucket.take(now)
