"""Memory at scale: one user with 10,000 memories, over HTTP and inside the shard.

    .venv/bin/python benchmarks/bench_memory.py [--memories 10000] [--searches 200] [--repeats 3]

Starts memserve as `make run` does (configs/local.yaml, configs/serve.env, SQLite) in a
temporary directory and gives one user real memories from LoCoMo
(../shared/data/locomo/locomo10.json, read in place): every conversation turn as it was
said ("Speaker: text", with its session and the session's date), then the dataset's
observations, event summaries and session summaries (one sentence each) as plain facts,
until there are `--memories` of them. Then:

  ingest     the items in batches of 250 through `POST /v1/memories`, as a client
             replaying its history would: memories/s, and what each write became
             (ADD, MERGE, NOOP);
  search     LoCoMo's questions verbatim through `POST /v1/memories/search` (k=10), one at
             a time, each followed by a bare `GET /health` and `POST /v1/embeddings` of the
             same question, so the same run shows what the proxy and the embedding cost;
             p50/p95/p99 per repeat, then medians and spread over repeats;
  in shard   after the app stops, its SQLite store is opened by the same `ShardSearcher` a
             VectorSearch replica runs, and the same questions (embedded here with the same
             MiniLM) are searched again: the shard's own work, without Ray or HTTP;
  consolidation  one user's 1,000 memories through the tier maintainer, as
             `benchmarks/bench_consolidation.py` measures it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import locomo
import servers
from stats import pct

from serve_app.core.retrieval import SearchFilters, ShardQuery
from serve_app.core.sharding import shard_for
from serve_app.core.temporal import parse_time_query
from serve_app.settings import AppSettings
from serve_app.shard_search import ShardSearcher

logger = logging.getLogger("bench_memory")

BATCH = 250
K = 10
SENTENCE = re.compile(r"(?<=[.!?])\s+")


# ---------------------------------------------------------------------------- the data


def _facts(sample: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The dataset's own summaries of a conversation, one fact each, at their session's date."""
    conversation = sample["conversation"]
    dates = {f"session_{n}": locomo.session_time(date) for n, date, _ in locomo.sessions(conversation)}
    for session, by_speaker in sample.get("observation", {}).items():
        when = dates.get(session.removesuffix("_observation"))
        for facts in by_speaker.values():
            for fact, _evidence in facts:
                yield {"text": fact, "occurred_at": when}
    for session, events in sample.get("event_summary", {}).items():
        when = dates.get(session.removeprefix("events_"))
        for speaker, said in events.items():
            if speaker != "date":
                for event in said:
                    yield {"text": event, "occurred_at": when}
    for session, summary in sample.get("session_summary", {}).items():
        when = dates.get(session.removesuffix("_summary"))
        for sentence in SENTENCE.split(summary):
            if sentence.strip():
                yield {"text": sentence.strip(), "occurred_at": when}


def corpus(data: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` memories: every conversation's turns first (as `locomo.py` sends them), then facts."""
    turns = [m for i, sample in enumerate(data) for m in _prefixed(locomo.memories_of(sample), f"c{i}-")]
    items = turns + [fact for sample in data for fact in _facts(sample) if fact["text"].strip()]
    if len(items) < n:
        raise SystemExit(f"the dataset has {len(items)} memories; ask for at most that many")
    return items[:n]


def _prefixed(memories: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """One user holds every conversation: keep their sessions apart."""
    return [{**m, "session": prefix + m["session"]} if m.get("session") else m for m in memories]


def questions(data: list[dict[str, Any]], n: int) -> list[str]:
    asked = [str(q["question"]) for sample in data for q in sample["qa"]]
    random.Random(7).shuffle(asked)
    return asked[:n]


# ---------------------------------------------------------------------------- over HTTP


@dataclass
class Ingested:
    memories: int
    seconds: float
    outcomes: Counter[str]

    @property
    def rate(self) -> float:
        return self.memories / self.seconds


async def ingest(client: httpx.AsyncClient, user: str, items: list[dict[str, Any]]) -> Ingested:
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for i in range(0, len(items), BATCH):
        response = await client.post("/v1/memories", json={"user": user, "memories": items[i:i + BATCH]})
        response.raise_for_status()
        outcomes.update(r["event"] for r in response.json()["results"])
        if (i // BATCH) % 8 == 0:
            logger.info("ingested %d/%d", i + BATCH, len(items))
    return Ingested(len(items), time.perf_counter() - started, outcomes)


async def _timed(call: Any) -> float:
    started = time.perf_counter()
    response = await call
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


async def search_round(client: httpx.AsyncClient, user: str, asked: list[str]) -> dict[str, list[float]]:
    """Each question: search, then a bare /health and the embedding alone, in turn."""
    times: dict[str, list[float]] = {"search": [], "health": [], "embed": []}
    for question in asked:
        times["search"].append(await _timed(client.post("/v1/memories/search",
                                                        json={"user": user, "query": question, "k": K})))
        times["health"].append(await _timed(client.get("/health")))
        times["embed"].append(await _timed(client.post("/v1/embeddings",
                                                       json={"model": "all-MiniLM-L6-v2", "input": question})))
    return times


# ---------------------------------------------------------------------------- inside the shard


async def in_shard(data_dir: Path, user: str, asked: list[str], repeats: int) -> list[list[float]]:
    """The shard's own search time over the app's store: `ShardSearcher.search` as a
    VectorSearch replica runs it (first call loads the user's index; it is not counted)."""
    settings = AppSettings(data_dir=str(data_dir))
    store = settings.open_store()
    memory = settings.memory
    shards = settings.vector_search.num_shards
    searcher = ShardSearcher(store, shard_for(user, shards), settings.embedder.dimension,
                             settings.vector_search.max_loaded_users, memory.scoring, memory.tier_registry())
    vectors = locomo.MiniLM().encode(asked)
    now = time.time()
    queries = [ShardQuery(user, vector, K, SearchFilters(), text, time_range=parse_time_query(text, now).range)
               for text, vector in zip(asked, vectors, strict=True)]
    await searcher.search(queries[0])
    rounds = []
    for _ in range(repeats):
        times = []
        for query in queries:
            started = time.perf_counter()
            await searcher.search(query)
            times.append((time.perf_counter() - started) * 1000)
        rounds.append(times)
    searcher.close()
    return rounds


# ---------------------------------------------------------------------------- report


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": pct(values, 0.95), "p99": pct(values, 0.99)}


def spread(rounds: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in rounds]
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(ingested: Ingested, http: list[dict[str, list[float]]], shard: list[list[float]],
           consolidation_ms: list[float]) -> str:
    lines = [
        f"ingest: {ingested.memories} memories in {ingested.seconds:.1f} s = {ingested.rate:.0f} memories/s "
        f"(batches of {BATCH}); outcomes {dict(ingested.outcomes)}",
        "",
        f"{len(http)} repeats of {len(http[0]['search'])} searches (k={K}), one at a time; "
        "medians (min-max) over repeats",
        "",
        "| ms | p50 | p95 | p99 |",
        "|---|---|---|---|",
    ]
    rows = {"search over HTTP (embedding included)": [summary(r["search"]) for r in http],
            "embedding alone over HTTP (/v1/embeddings)": [summary(r["embed"]) for r in http],
            "bare /health over HTTP": [summary(r["health"]) for r in http],
            "search inside the shard (ShardSearcher)": [summary(r) for r in shard]}
    for name, rounds in rows.items():
        lines.append(f"| {name} | {spread(rounds, 'p50')} | {spread(rounds, 'p95')} | {spread(rounds, 'p99')} |")
    if consolidation_ms:
        lines += ["", f"consolidation of 1,000 memories: median {statistics.median(consolidation_ms):.1f} ms, "
                      f"worst {max(consolidation_ms):.1f} ms over {len(consolidation_ms)} runs"]
    return "\n".join(lines)


def consolidation(runs: int) -> list[float]:
    import bench_consolidation

    timings, _ = bench_consolidation.measure(1000, runs, "sqlite", "")
    return timings


async def run(args: argparse.Namespace) -> str:
    data = json.loads(args.data.read_text())
    items, asked = corpus(data, args.memories), questions(data, args.searches)
    user = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        with servers.memserve(directory) as base:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                ingested = await ingest(client, user, items)
                logger.info("ingested at %.0f/s; searching", ingested.rate)
                await search_round(client, user, asked[:20])  # warm: the user's index is loaded
                http = [await search_round(client, user, asked) for _ in range(args.repeats)]
        shard = await in_shard(directory / "data", user, asked, args.repeats)
    return report(ingested, http, shard, consolidation(args.consolidation_runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--consolidation-runs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=locomo.DEFAULT_DATA)
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    text = asyncio.run(run(args))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
