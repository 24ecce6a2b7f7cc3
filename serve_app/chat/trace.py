"""Each request's record of its stages: how long each took and which ones degraded.

A stage runs under its deadline through `Trace.run`; a stage that fails or is late
returns None and is named in `memserve.degraded`, and the answer goes on without it. The
trace is the only state the stages of one request share, and they only append to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Trace:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings_ms: dict[str, float] = {}
        self.degraded: list[str] = []

    async def run(self, name: str, work: Awaitable[T], timeout_s: float) -> T | None:
        """`work` under its deadline; None (and `name` degraded) if it fails or is late."""
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(work, timeout_s)
        except Exception as exc:  # any stage failure degrades, never fails
            logger.warning("stage %s degraded: %r", name, exc)
            self.degraded.append(name)
            return None
        finally:
            self.record(name, started)

    async def timed(self, name: str, work: Awaitable[T]) -> T:
        """`work` with its time recorded; failures propagate (no deadline, no degrading)."""
        started = time.perf_counter()
        try:
            return await work
        finally:
            self.record(name, started)

    def record(self, name: str, since: float) -> None:
        self.timings_ms[name] = _ms(time.perf_counter() - since)

    def since_start(self, name: str) -> None:
        """Record the time from the request's start to now under `name` (ttft, total)."""
        self.record(name, self.started)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
