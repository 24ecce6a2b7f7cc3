"""Cache hit vs. miss latency through HTTP, in one run.

    make run                                 # in one terminal
    .venv/bin/python benchmarks/bench_cache.py [--url http://127.0.0.1:8000] [--requests 50]

Sends 50 distinct chat requests (16-token answers, no user) twice: the first pass misses
and generates, the second is answered from the response cache. Prints p50/p95 of both.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import httpx
from stats import pct

MODEL = "smollm2-135m-instruct"


async def timed(client: httpx.AsyncClient, body: dict[str, object]) -> tuple[float, bool]:
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000, bool(response.json()["memserve"]["cached"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    bodies = [{"model": MODEL, "max_tokens": 16, "temperature": 0,
               "messages": [{"role": "user", "content": f"Tell me one fact about the number {i} ({run})."}]}
              for i in range(args.requests)]
    async with httpx.AsyncClient(base_url=args.url, timeout=120) as client:
        misses = [await timed(client, b) for b in bodies]
        hits = [await timed(client, b) for b in bodies]
    assert not any(c for _, c in misses) and all(c for _, c in hits), "unexpected cache state"
    miss_ms, hit_ms = [t for t, _ in misses], [t for t, _ in hits]
    print(f"\n{args.requests} requests, ms      p50      p95")
    print(f"cache miss (generates) {statistics.median(miss_ms):8.1f} {pct(miss_ms, 0.95):8.1f}")
    print(f"cache hit              {statistics.median(hit_ms):8.1f} {pct(hit_ms, 0.95):8.1f}")
    print(f"miss/hit p50 ratio     {statistics.median(miss_ms) / statistics.median(hit_ms):8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
