"""LoCoMo retrieval quality through memserve's public API.

    make run                                         # in one terminal, then
    .venv/bin/python benchmarks/locomo.py [--url http://127.0.0.1:8000]
    .venv/bin/python benchmarks/locomo.py --in-process   # no Ray: the same app in this process

Reads ../shared/data/locomo/locomo10.json (never copied into this repository). Each
conversation becomes one user; each turn is sent as it was said and nothing else:
`{"text": "<speaker>: <text>", "session": "session_<n>", "occurred_at": <the session's
date>, "metadata": {"dia_id": ...}}` through `POST /v1/memories` (no context, dates or
photo captions in the text: indexing a turn with its context is the server's work). Then
every question of categories 1-4 that has evidence is asked with `POST
/v1/memories/search`; the table gives the share of questions with an evidence turn among
the top 1/5/10/20 results, and among the top 5 plus their connected memories
(`include_connections`, at most `memory.max_connections` more). Questions are sent
verbatim; nothing here or in the server looks at them before the search, and no server
parameter was tuned on them.

The same run also scores the plain dense baseline: all-MiniLM-L6-v2 over the raw
"Speaker: text" turns, one exact inner-product index per conversation (the data README's
reference figure, 0.516 at 10), embedded in this process (`--no-baseline` skips it).

`--in-process` builds the app exactly as an Orchestrator replica does (`create_app` over
`build_runtime`), with the real MiniLM embedder, one VectorSearch shard core and a SQLite
store in a temporary directory, and talks HTTP to it in memory: everything but Ray's
transport and the LLM (which memory search does not use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
CUTOFFS = (1, 5, 10, 20)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
BATCH = 250
WITH_CONNECTIONS_K = 5

logger = logging.getLogger("locomo")

Rank = tuple[int, int | None]  # (category, rank of the first evidence turn or None)


def sessions(conversation: dict[str, Any]) -> list[tuple[int, str, list[dict[str, Any]]]]:
    found = []
    for key, turns in conversation.items():
        if key.startswith("session_") and not key.endswith("date_time") and isinstance(turns, list):
            n = int(key.split("_")[1])
            found.append((n, conversation.get(f"{key}_date_time", ""), turns))
    return sorted(found)


def session_time(date: str) -> str:
    """'1:56 pm on 8 May, 2023' -> '2023-05-08T13:56:00' (the data gives no zone)."""
    return datetime.strptime(date, "%I:%M %p on %d %B, %Y").isoformat()


def raw_text(turn: dict[str, Any]) -> str:
    return f"{turn['speaker']}: {turn['text']}"


def memories_of(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """Each turn as it was said, with its session, the session's date and its id."""
    return [
        {"text": raw_text(turn), "session": f"session_{n}", "occurred_at": session_time(date),
         "metadata": {"dia_id": turn["dia_id"]}}
        for n, date, turns in sessions(sample["conversation"])
        for turn in turns
    ]


def questions_of(sample: dict[str, Any]) -> list[dict[str, Any]]:
    return [q for q in sample["qa"] if q.get("category") in CATEGORIES and q.get("evidence")]


def first_evidence(ids: Sequence[str | None], evidence: Sequence[str]) -> int | None:
    wanted = set(evidence)
    return next((i for i, dia in enumerate(ids) if dia in wanted), None)


async def ingest(client: httpx.AsyncClient, user: str, memories: list[dict[str, Any]]) -> int:
    """Turns in order, a batch at a time. `dedup: false`: every turn is its own event (two
    "Thanks!" in two sessions are two memories, each with its own turn id)."""
    seq = 0
    for start in range(0, len(memories), BATCH):
        response = await client.post("/v1/memories", json={"user": user, "memories": memories[start:start + BATCH],
                                                           "dedup": False})
        response.raise_for_status()
        seq = response.json()["seq"]
    return seq


async def evaluate(client: httpx.AsyncClient, user: str, qa: list[dict[str, Any]], seq: int,
                   gate: asyncio.Semaphore) -> tuple[list[Rank], list[Rank]]:
    """Per question: the rank of the first evidence turn in the top 20, and in the top 5
    followed by their connected memories (top 8: the 5 and up to 3 connected)."""

    async def ask(item: dict[str, Any], k: int, connections: bool) -> Rank:
        async with gate:
            response = await client.post("/v1/memories/search", json={
                "user": user, "query": str(item["question"]), "k": k, "min_seq": seq,
                "include_connections": connections})
        response.raise_for_status()
        ids = [r["metadata"].get("dia_id") for r in response.json()["results"]]
        return item["category"], first_evidence(ids, item["evidence"])

    ranked = await asyncio.gather(*(ask(item, max(CUTOFFS), False) for item in qa))
    connected = await asyncio.gather(*(ask(item, WITH_CONNECTIONS_K, True) for item in qa))
    return list(ranked), list(connected)


# ---------------------------------------------------------------------------- the dense baseline


class MiniLM:
    """all-MiniLM-L6-v2 as the Embedder deployment runs it (its default encoder settings,
    normalised vectors, batch 64), with the deployment's cache of repeated texts."""

    def __init__(self) -> None:
        from serve_app.encoders import open_encoder
        from serve_app.settings import EmbedderSettings

        s = EmbedderSettings()
        self.model = open_encoder(s.model, s.backend, s.device, s.num_threads)
        self.cache: dict[tuple[str | None, str], np.ndarray] = {}
        self.lock = asyncio.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, 64)

    async def embed(self, texts: list[str], namespace: str | None = None) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if (namespace, t) not in self.cache]
        if missing:
            async with self.lock:  # one forward pass at a time, as one replica runs them
                for text, vector in zip(missing, await asyncio.to_thread(self.encode, missing), strict=True):
                    self.cache[(namespace, text)] = vector
        return np.stack([self.cache[(namespace, t)] for t in texts])

    def count_tokens(self, texts: list[str]) -> int:
        return self.model.count_tokens(texts)

    def stats(self) -> dict[str, int]:
        return {"hits": 0, "misses": 0, "entries": len(self.cache)}


def dense_baseline(model: MiniLM, sample: dict[str, Any]) -> list[Rank]:
    turns = [turn for _, _, ts in sessions(sample["conversation"]) for turn in ts]
    vectors = model.encode([raw_text(t) for t in turns])
    qa = questions_of(sample)
    queries = model.encode([str(q["question"]) for q in qa])
    ranks = []
    for item, scores in zip(qa, queries @ vectors.T, strict=True):
        top = np.argsort(-scores, kind="stable")[: max(CUTOFFS)]
        ranks.append((item["category"], first_evidence([turns[i]["dia_id"] for i in top], item["evidence"])))
    return ranks


# ---------------------------------------------------------------------------- the app, in process


class _NoLLM:
    async def generate(self, request: Any) -> Any:
        raise RuntimeError("the LoCoMo benchmark searches memories; it never generates")


def in_process_app(data_dir: str, embedder: MiniLM, llm: Any = None, lexical_feedback: bool = False) -> Any:
    """The Orchestrator's app over local deployment cores (no Ray), the real MiniLM included;
    `llm`: the LLM deployment's core (none by default: memory search never generates);
    `lexical_feedback`: `memory.scoring.lexical_feedback` (RM3), off as shipped."""
    from serve_app.app import create_app
    from serve_app.clients import Clients, LocalEndpoint
    from serve_app.core.response_cache import InProcessCache
    from serve_app.maintenance import Consolidation, TierMaintainer
    from serve_app.runtime import build_runtime
    from serve_app.settings import AppSettings
    from serve_app.shard_search import ShardSearcher

    settings = AppSettings(data_dir=data_dir)
    settings.vector_search.num_shards = 1
    settings.cache.local_ttl_s = 0
    settings.memory.scoring.lexical_feedback = lexical_feedback
    store = settings.open_store()
    memory = settings.memory
    shard = ShardSearcher(store, 0, settings.embedder.dimension, settings.vector_search.max_loaded_users,
                          memory.scoring, memory.tier_registry())
    consolidation = Consolidation(TierMaintainer(store, memory.tier_registry(), memory.consolidation, 1))
    clients = Clients.over(embedder=LocalEndpoint(embedder), shards=[LocalEndpoint(shard)],
                           llm=LocalEndpoint(llm or _NoLLM()), cache=LocalEndpoint(InProcessCache(1000, 60)),
                           consolidator=LocalEndpoint(consolidation), cache_settings=settings.cache)
    return create_app(build_runtime(settings, clients, store))


# ---------------------------------------------------------------------------- report


def table(title: str, ranks: list[Rank], cutoffs: Sequence[int] = CUTOFFS) -> dict[str, dict[str, float]]:
    by_cat: dict[int, list[int | None]] = defaultdict(list)
    for cat, rank in ranks:
        by_cat[cat].append(rank)
    print(f"\n{title}\n{'category':<14}{'n':>6}" + "".join(f"{'top' + str(k):>8}" for k in cutoffs))
    rows = [(CATEGORIES[c], by_cat[c]) for c in sorted(by_cat)] + [("all (1-4)", [r for _, r in ranks])]
    out: dict[str, dict[str, float]] = {}
    for name, rs in rows:
        shares = [sum(1 for r in rs if r is not None and r < k) / len(rs) for k in cutoffs]
        print(f"{name:<14}{len(rs):>6}" + "".join(f"{s:>8.3f}" for s in shares))
        out[name] = {f"top{k}": round(s, 4) for k, s in zip(cutoffs, shares, strict=True)}
    return out


async def run(args: argparse.Namespace) -> None:
    data = json.loads(args.data.read_text())[: args.samples]
    model = MiniLM() if args.in_process or args.baseline else None
    run_id = uuid.uuid4().hex[:8]
    gate = asyncio.Semaphore(args.concurrency)
    ranked: list[Rank] = []
    connected: list[Rank] = []
    baseline: list[Rank] = []
    ingest_s = search_s = 0.0
    turns = questions = 0
    with tempfile.TemporaryDirectory(prefix="locomo-") as tmp:
        if args.in_process:
            assert model is not None
            app = in_process_app(tmp, model, lexical_feedback=args.lexical_feedback)
            transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
            url = "http://in-process"
        else:
            transport, url = httpx.AsyncHTTPTransport(), args.url
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=600) as client:
            for sample in data:
                user = f"locomo-{run_id}-{sample['sample_id']}"
                memories = memories_of(sample)
                started = time.perf_counter()
                seq = await ingest(client, user, memories)
                ingest_s += time.perf_counter() - started
                qa = questions_of(sample)
                started = time.perf_counter()
                found, with_connections = await evaluate(client, user, qa, seq, gate)
                search_s += time.perf_counter() - started
                ranked += found
                connected += with_connections
                turns, questions = turns + len(memories), questions + len(qa)
                await client.delete(f"/v1/users/{user}")  # leave nothing behind
                if model is not None and args.baseline:
                    baseline += dense_baseline(model, sample)
                logger.warning("%s: %d turns, %d questions", sample["sample_id"], len(memories), len(qa))
    where = "in process (no Ray)" if args.in_process else args.url
    print(f"LoCoMo through {where}: {len(data)} conversations, {turns} turns stored ({turns / ingest_s:.0f}/s), "
          f"{2 * questions} searches of {questions} questions ({2 * questions / search_s:.0f}/s)")
    results = {"memserve": table("memserve (raw turns + session + occurred_at; hybrid, context-indexed)", ranked)}
    results["memserve_connections"] = table(
        f"memserve top {WITH_CONNECTIONS_K} + connected memories (include_connections)", connected, (5, 8))
    if baseline:
        results["dense_minilm"] = table("plain dense MiniLM over raw turns (same run)", baseline)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--in-process", action="store_true", help="build the app here (no Ray, no LLM)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", type=int, default=None, help="only the first N conversations")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also score plain dense MiniLM over the raw turns")
    parser.add_argument("--json", type=Path, default=None, help="write the tables here too")
    parser.add_argument("--lexical-feedback", action="store_true",
                        help="with --in-process: turn on RM3 query feedback (memory.scoring.lexical_feedback); "
                             "against a running app, set it in the app's config instead")
    args = parser.parse_args()
    if args.lexical_feedback and not args.in_process:
        parser.error("--lexical-feedback needs --in-process (a running app takes it from its config)")
    asyncio.run(run(args))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    main()
