"""Overload, before and after load shedding: what 128 concurrent chats do to memserve.

    .venv/bin/python benchmarks/bench_overload.py [--concurrency 128] [--repeats 2]

Starts the app twice per repeat with `serve run` (one at a time: the machine has 2 cores),
from configs/local.yaml as shipped (`shedding`: the LLM takes 32 streams plus 16 queued and
refuses the rest at once with 503 + Retry-After) and from the same file with the LLM's
limits of the previous release (`queueing`: max_ongoing_requests 64, no queue limit). Each
run sends a burst of streamed chats (48 tokens, cache and memory off, as a client that
just wants an answer) while /health is probed, then measures how long until a fresh chat
is answered again. Prints, per mode: share shed, p50/p95 of served requests, p95 of the
time to a 503, /health p95, and the time to recover; medians over repeats with the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import servers

logger = logging.getLogger("bench_overload")

MODEL = "smollm2-135m-instruct"
MODES = ("queueing", "shedding")


@dataclass(frozen=True)
class Outcome:
    status: int
    seconds: float


@dataclass(frozen=True)
class RunResult:
    mode: str
    shed_share: float
    served_p50_s: float
    served_p95_s: float
    shed_p95_s: float
    health_p95_ms: float
    recover_s: float


def limits_of(mode: str) -> servers.ConfigEdit:
    """configs/local.yaml as shipped (`shedding`), or with the LLM's limits of the previous
    release (`queueing`)."""

    def edit(config: dict[str, Any]) -> None:
        if mode == "queueing":
            llm = next(d for d in config["applications"][0]["deployments"] if d["name"] == "LLM")
            llm.update(max_ongoing_requests=64, max_queued_requests=-1)
            llm.pop("backpressure_config", None)

    return edit


def chat_body(max_tokens: int, i: int) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "stream": True, "memserve": {"cache": False, "memory": False},
            "messages": [{"role": "user", "content": f"Write a short poem about the number {i}."}]}


async def one_chat(client: httpx.AsyncClient, i: int) -> Outcome:
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=chat_body(48, i)) as response:
        await response.aread()
    return Outcome(response.status_code, time.perf_counter() - started)


async def probe_health(client: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    times = []
    while not stop.is_set():
        started = time.perf_counter()
        await client.get("/health")
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.5)
    return times


async def burst(base: str, concurrency: int) -> tuple[list[Outcome], list[float], float]:
    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        stop = asyncio.Event()
        health = asyncio.create_task(probe_health(client, stop))
        outcomes = await asyncio.gather(*(one_chat(client, i) for i in range(concurrency)))
        ended = time.perf_counter()
        stop.set()
        while (await one_chat(client, -1)).status != 200:  # the first answer after the burst
            await asyncio.sleep(0.2)
        return list(outcomes), await health, time.perf_counter() - ended


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else (values[0] if values else float("nan"))


def summarize(mode: str, outcomes: list[Outcome], health: list[float], recover_s: float) -> RunResult:
    served = [o.seconds for o in outcomes if o.status == 200]
    shed = [o.seconds for o in outcomes if o.status in (429, 503)]
    other = [o.status for o in outcomes if o.status not in (200, 429, 503)]
    if other:
        logger.warning("%s: unexpected statuses %s", mode, sorted(set(other)))
    return RunResult(mode, len(shed) / len(outcomes), statistics.median(served) if served else float("nan"),
                     p95(served), p95(shed), p95(health), recover_s)


def run_mode(mode: str, concurrency: int, directory: Path) -> RunResult:
    with servers.memserve(directory, edit=limits_of(mode), model=MODEL) as base:
        result = summarize(mode, *asyncio.run(burst(base, concurrency)))
        logger.info("%s", result)
        return result


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(results: list[RunResult]) -> str:
    lines = ["| mode | shed | served p50 s | served p95 s | 503 p95 s | /health p95 ms | recover s |",
             "|---|---|---|---|---|---|---|"]
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        if not runs:
            continue
        cells = [spread([r.shed_share * 100 for r in runs], ".0f") + " %",
                 spread([r.served_p50_s for r in runs], ".1f"), spread([r.served_p95_s for r in runs], ".1f"),
                 spread([r.shed_p95_s for r in runs], ".2f"), spread([r.health_p95_ms for r in runs], ".0f"),
                 spread([r.recover_s for r in runs], ".2f")]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for mode in args.modes:
                results.append(run_mode(mode, args.concurrency, Path(tmp)))
    print(report(results))


if __name__ == "__main__":
    main()
