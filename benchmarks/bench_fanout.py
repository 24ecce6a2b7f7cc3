"""Fan-out vs. one-stage-after-another through the real graph, in one run.

    make run                                 # in one terminal
    .venv/bin/python benchmarks/bench_fanout.py [--url http://127.0.0.1:8000] [--requests 50]

Gives a user 200 memories and loads a small product catalog, then sends the same 50 chat
questions twice each, interleaved: once with the stages fanned out (the default) and once
with `memserve.fanout: false`, which runs the same stages one after another. Everything
is on as configured (cache lookup, embedding, memory search, product decision, single-
flight claim); each question carries a unique tag so that every request is a cache miss.
Prints the server-side time until the prompt is ready (`prepare`, what fan-out changes),
time to first token and total latency (8-token answers), p50/p95 and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import httpx
from stats import pct

MODEL = "smollm2-135m-instruct"
FACTS = ["I live in {c}.", "My favourite food is {f}.", "I work as a {j}.", "Last week I visited {c}.",
         "I am learning to cook {f}.", "My friend is a {j} in {c}."]
CITIES = ["Lisbon", "Osaka", "Denver", "Nairobi", "Oslo", "Lima", "Hanoi", "Tunis"]
FOODS = ["ramen", "tacos", "curry", "pierogi", "falafel", "paella"]
JOBS = ["nurse", "pilot", "baker", "teacher", "welder", "chemist"]
QUESTIONS = ["Where do I live?", "What food do I like?", "Can you recommend running shoes under $100?",
             "What is my job?", "Which city did I visit?", "I want to buy a gift for a coffee lover",
             "What should I cook tonight?", "Suggest a backpack for hiking"]
CATALOG = [
    {"name": f"{adj} {kind}", "description": f"{adj.lower()} {kind.lower()} for everyday use",
     "category": cat, "price": price, "tags": [cat]}
    for i, (adj, kind, cat, price) in enumerate(
        (a, k, c, 20 + 15 * j) for j, (a, (k, c)) in enumerate(
            [(a, kc) for a in ("Swift", "Sturdy", "Classic", "Urban") for kc in
             (("Running Shoes", "shoes"), ("Backpack", "bags"), ("Coffee Grinder", "kitchen"), ("Kettle", "kitchen"))]))
]


async def one(client: httpx.AsyncClient, user: str, question: str, fanout: bool) -> tuple[float, float, float]:
    body = {"model": MODEL, "user": user, "max_tokens": 8, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": question}],
            "memserve": {"write_back": False, "fanout": fanout}}
    started = time.perf_counter()
    first = None
    prepare = 0.0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in event.get("choices", [])):
                first = time.perf_counter()
            if event.get("memserve"):
                prepare = event["memserve"]["timings_ms"].get("prepare", 0.0)
    end = time.perf_counter()
    return prepare, ((first or end) - started) * 1000, (end - started) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    user = f"fanout-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=args.url, timeout=120) as client:
        memories = [{"text": FACTS[i % 6].format(c=CITIES[i % 8], f=FOODS[i % 6], j=JOBS[i % 6]) + f" (note {i})"}
                    for i in range(200)]
        added = await client.post("/v1/memories", json={"user": user, "memories": memories, "dedup": False})
        added.raise_for_status()
        (await client.post("/v1/catalog", json={"products": CATALOG})).raise_for_status()
        for fanout in (True, False):  # warm both paths
            await one(client, user, f"hello {fanout}", fanout)
        results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        run = uuid.uuid4().hex[:6]
        for i in range(args.requests):
            for fanout in ((True, False) if i % 2 else (False, True)):  # alternate the order
                # Unique per request and mode: every request misses the cache, as new questions do.
                question = f"{QUESTIONS[i % len(QUESTIONS)]} ({run}-{i}-{'f' if fanout else 's'})"
                results[fanout].append(await one(client, user, question, fanout))
        await client.delete(f"/v1/users/{user}")
    print(f"\n{args.requests} requests each way (cache lookup + embedding, memory search + product decision"
          " + single-flight claim; every request a cache miss), ms")
    print("prepare = request start to prompt ready (server side); ttft and total seen by the client")
    print(f"{'mode':<12}{'prep p50':>10}{'prep p95':>10}{'ttft p50':>10}{'ttft p95':>10}"
          f"{'total p50':>11}{'total p95':>11}")
    rows = {}
    for fanout, name in ((True, "fan-out"), (False, "sequential")):
        cols = list(zip(*results[fanout], strict=True))
        rows[name] = tuple(v for col in cols for v in (statistics.median(col), pct(list(col), 0.95)))
        print(f"{name:<12}" + "".join(f"{v:>10.1f} " for v in rows[name]))
    ratio = [s / f for f, s in zip(rows["fan-out"], rows["sequential"], strict=True)]
    print(f"{'seq/fan':<12}" + "".join(f"{v:>10.2f} " for v in ratio))


if __name__ == "__main__":
    asyncio.run(main())
