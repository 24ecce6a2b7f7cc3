"""Consolidation speed: one pass over 1,000 memories of a user must take under 500 ms.

    .venv/bin/python benchmarks/bench_consolidation.py [--entries 1000] [--runs 7] [--backend sqlite|redis]

Fills a fresh store with memories spread over the promotable tiers with random
importance, access counts and ages, then times `TierMaintainer.maintain_user` (read all,
sweep expired, plan promotions, commit them in one batch, enforce caps); prints the
median and worst of several runs on fresh data. For `--backend redis`, pass `--redis-url`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from serve_app.core.consolidation import ConsolidationSettings
from serve_app.core.store import NewMemory
from serve_app.core.stores import open_store
from serve_app.core.tiers import TierRegistry, default_tier_policies
from serve_app.maintenance import TierMaintainer

TIERS = ["working", "short_term", "long_term", "episodic"]


def fill(store, user: str, n: int, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [NewMemory(text=f"memory {i}", tier=TIERS[i % 4], importance=float(rng.random()), embedding=vectors[i],
                       expires_at=None) for i in range(n)]
    store.add(user, 0, items)
    # Age them and give them usage, as a real history would.
    for record in store.all_records(user)[: n // 2]:
        store.record_access(user, [record.key] * int(rng.integers(0, 6)), time.time())


def measure(entries: int, runs: int, backend: str, redis_url: str) -> tuple[list[float], list[int]]:
    """Milliseconds of one `maintain_user` pass per run, each on a fresh store, and what it promoted."""
    rng = np.random.default_rng(0)
    timings, promoted = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            store = open_store(backend, sqlite_path=Path(tmp) / f"run{run}.sqlite3", redis_url=redis_url,
                               redis_prefix=f"bench{uuid.uuid4().hex[:6]}")
            fill(store, "bench", entries, rng)
            maintainer = TierMaintainer(store, TierRegistry(default_tier_policies()), ConsolidationSettings(),
                                        num_shards=2)
            started = time.perf_counter()
            result = maintainer.maintain_user("bench", now=time.time() + 3 * 24 * 3600)
            timings.append((time.perf_counter() - started) * 1000)
            promoted.append(result["promoted"])
    return timings, promoted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    timings, promoted = measure(args.entries, args.runs, args.backend, args.redis_url)
    print(f"consolidation of {args.entries} memories ({args.backend}), {args.runs} runs: "
          f"median {statistics.median(timings):.1f} ms, worst {max(timings):.1f} ms, "
          f"promotions per run {statistics.median(promoted):.0f}")


if __name__ == "__main__":
    main()
