"""Latency metrics per operation: count, mean and percentiles over a sliding window.

The window is this process's (one replica's); a `sink` also receives every observation,
which is how the Orchestrator exports them to Ray's metrics, where replicas add up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

WINDOW = 10_000


MetricsSink = Callable[[str, float], None]


class Metrics:
    def __init__(self, window: int = WINDOW, sink: MetricsSink | None = None) -> None:
        self._window = window
        self._sink = sink
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}

    def observe(self, name: str, value_ms: float) -> None:
        self._samples.setdefault(name, deque(maxlen=self._window)).append(value_ms)
        self._counts[name] = self._counts.get(name, 0) + 1
        if self._sink is not None:
            self._sink(name, value_ms)

    def observe_all(self, values: dict[str, float], prefix: str = "") -> None:
        for name, value in values.items():
            self.observe(prefix + name, value)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, samples in sorted(self._samples.items()):
            values = np.fromiter(samples, dtype=np.float64)
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            out[name] = {"count": self._counts[name], "mean": round(float(values.mean()), 3),
                         "p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}
        return out
