"""The Embedder's encoders side by side: one short query and a batch of conversation turns,
on an idle machine and beside a core kept busy (as the vLLM engine keeps one).

    .venv/bin/python benchmarks/bench_embedder.py [--queries 60] [--repeats 3]

Each configuration (backend x threads) encodes the same LoCoMo question one at a time and
the first 250 turns of LoCoMo's first conversation with their context, as the server
indexes them (../shared/data/locomo/locomo10.json, read in place). "busy" runs a process
spinning on one core for the duration. Medians over the repeats, min-max in brackets.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from locomo import DEFAULT_DATA, memories_of

from serve_app.core.conversation import index_text
from serve_app.encoders import open_encoder

QUERY = "When did Caroline go to the LGBTQ support group?"
CONFIGS = [("onnx", 2), ("onnx", 1), ("torch", 2), ("torch", 1)]


def turns() -> list[str]:
    memories = memories_of(json.loads(DEFAULT_DATA.read_text())[0])[:250]
    previous = [None, *[m["text"] for m in memories[:-1]]]
    return [index_text(m["text"], datetime.fromisoformat(m["occurred_at"]).timestamp(), p)
            for m, p in zip(memories, previous, strict=True)]


def spin() -> None:
    while True:
        pass


def measure(backend: str, threads: int, batch: list[str], queries: int) -> tuple[float, float, float]:
    """(query p50 ms, query p95 ms, batch s) of one fresh encoder."""
    encoder = open_encoder("bundled:all-MiniLM-L6-v2", backend, "cpu", threads)
    for _ in range(5):
        encoder.encode([QUERY], 1)
    times = []
    for _ in range(queries):
        started = time.perf_counter()
        encoder.encode([QUERY], 1)
        times.append(1000 * (time.perf_counter() - started))
    started = time.perf_counter()
    encoder.encode(batch, 64)
    cuts = statistics.quantiles(times, n=20)
    return statistics.median(times), cuts[18], time.perf_counter() - started


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batch = turns()
    print("| machine | backend | threads | query p50 ms | query p95 ms | 250 turns s |\n|---|---|---|---|---|---|")
    for machine in ("idle", "busy"):
        spinner = multiprocessing.Process(target=spin, daemon=True) if machine == "busy" else None
        if spinner is not None:
            spinner.start()
        try:
            for backend, threads in CONFIGS:
                runs = [measure(backend, threads, batch, args.queries) for _ in range(args.repeats)]
                p50, p95, whole = ([r[i] for r in runs] for i in range(3))
                cells = [machine, backend, str(threads), spread(p50, 1), spread(p95, 1), spread(whole, 2)]
                print("| " + " | ".join(cells) + " |", flush=True)
        finally:
            if spinner is not None:
                spinner.terminate()


if __name__ == "__main__":
    main()
