"""LoCoMo retrieval quality through memserve's public API.

    make run                                    # in one terminal
    .venv/bin/python benchmarks/locomo.py [--url http://127.0.0.1:8000] [--text raw|dated]

Reads ../shared/data/locomo/locomo10.json (never copied into this repository), stores
each conversation's turns as one user's memories with `POST /v1/memories`, then asks
every question of categories 1-4 that has evidence with `POST /v1/memories/search` and
prints the share of questions with an evidence turn among the top 1/5/10/20 results.

Memory text (`--text`): `raw` is "Speaker: text" (the published dense baseline's form);
`dated` prefixes the session date and appends the caption of a shared photo; `context`
(default) also appends the turn it replies to, since a reply ("Yes, last Tuesday!") means
little alone. That is what a person would remember of a turn. Nothing here looks at the
questions before searching.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
CUTOFFS = (1, 5, 10, 20)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
BATCH = 250

logger = logging.getLogger("locomo")


def sessions(conversation: dict[str, Any]) -> list[tuple[int, str, list[dict[str, Any]]]]:
    found = []
    for key, turns in conversation.items():
        if key.startswith("session_") and not key.endswith("date_time") and isinstance(turns, list):
            n = int(key.split("_")[1])
            found.append((n, conversation.get(f"{key}_date_time", ""), turns))
    return sorted(found)


def turn_text(turn: dict[str, Any]) -> str:
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return text


def memory_text(turn: dict[str, Any], previous: dict[str, Any] | None, date: str, mode: str) -> str:
    if mode == "raw":
        return f"{turn['speaker']}: {turn['text']}"
    text = f"[{date}] {turn_text(turn)}"
    if mode == "context" and previous is not None:
        text += f" (in reply to {turn_text(previous)})"
    return text


def memories_of(sample: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [
        {"text": memory_text(turn, turns[i - 1] if i else None, date, mode), "tier": "long_term",
         "metadata": {"dia_id": turn["dia_id"], "session": n, "date": date}}
        for n, date, turns in sessions(sample["conversation"])
        for i, turn in enumerate(turns)
    ]


async def ingest(client: httpx.AsyncClient, user: str, memories: list[dict[str, Any]]) -> int:
    seq = 0
    for start in range(0, len(memories), BATCH):
        response = await client.post("/v1/memories", json={"user": user, "memories": memories[start:start + BATCH],
                                                           "dedup": False})
        response.raise_for_status()
        seq = response.json()["seq"]
    return seq


async def evaluate(client: httpx.AsyncClient, user: str, qa: list[dict[str, Any]], seq: int,
                   gate: asyncio.Semaphore) -> list[tuple[int, int | None]]:
    """(category, rank of the first evidence turn or None) per question."""

    async def ask(item: dict[str, Any]) -> tuple[int, int | None]:
        async with gate:
            response = await client.post("/v1/memories/search", json={
                "user": user, "query": str(item["question"]), "k": max(CUTOFFS), "min_seq": seq})
        response.raise_for_status()
        ids = [r["metadata"].get("dia_id") for r in response.json()["results"]]
        evidence = set(item["evidence"])
        rank = next((i for i, dia in enumerate(ids) if dia in evidence), None)
        return item["category"], rank

    return list(await asyncio.gather(*(ask(item) for item in qa)))


def report(ranks: list[tuple[int, int | None]]) -> dict[str, float]:
    by_cat: dict[int, list[int | None]] = defaultdict(list)
    for cat, rank in ranks:
        by_cat[cat].append(rank)
    print(f"\n{'category':<14}{'n':>6}" + "".join(f"{'top' + str(k):>8}" for k in CUTOFFS))
    rows = [(CATEGORIES[c], by_cat[c]) for c in sorted(by_cat)] + [("all (1-4)", [r for _, r in ranks])]
    totals: dict[str, float] = {}
    for name, rs in rows:
        shares = [sum(1 for r in rs if r is not None and r < k) / len(rs) for k in CUTOFFS]
        print(f"{name:<14}{len(rs):>6}" + "".join(f"{s:>8.3f}" for s in shares))
        if name.startswith("all"):
            totals = {f"top{k}": s for k, s in zip(CUTOFFS, shares, strict=True)}
    return totals


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--text", choices=["raw", "dated", "context"], default="context")
    parser.add_argument("--samples", type=int, default=None, help="only the first N conversations")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    data = json.loads(args.data.read_text())[: args.samples]
    run = uuid.uuid4().hex[:8]
    gate = asyncio.Semaphore(args.concurrency)
    ranks: list[tuple[int, int | None]] = []
    ingest_s = search_s = 0.0
    turns = questions = 0
    async with httpx.AsyncClient(base_url=args.url, timeout=300) as client:
        for sample in data:
            user = f"locomo-{run}-{sample['sample_id']}"
            memories = memories_of(sample, args.text)
            started = time.perf_counter()
            seq = await ingest(client, user, memories)
            ingest_s += time.perf_counter() - started
            qa = [q for q in sample["qa"] if q.get("category") in CATEGORIES and q.get("evidence")]
            started = time.perf_counter()
            ranks += await evaluate(client, user, qa, seq, gate)
            search_s += time.perf_counter() - started
            turns, questions = turns + len(memories), questions + len(qa)
            await client.delete(f"/v1/users/{user}")  # leave nothing behind
    print(f"LoCoMo through {args.url}: {len(data)} conversations, {turns} turns stored "
          f"({turns / ingest_s:.0f}/s), {questions} questions ({questions / search_s:.0f}/s), text={args.text}")
    report(ranks)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
