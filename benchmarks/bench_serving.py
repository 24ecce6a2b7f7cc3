"""Serving overhead: memserve against `vllm serve` and the bare engine, in one run.

    .venv/bin/python benchmarks/bench_serving.py [--repeats 3] [--levels 1,8,32]

Each repeat measures, one engine resident at a time (two vLLM CPU engines on two cores
inflate each other's latency several times over):
  memserve  as `make run` starts it (configs/local.yaml, configs/serve.env; the LLM's
            shedding limits raised to 64 + 64 streams, as `vllm serve` queues); chats with
            memory, cache and product decisions off (`memserve` field), so the prompt is
            exactly the user's and the difference is the serving path itself;
  vllm      vLLM's OpenAI server on the same model directory and engine settings;
  engine    the bare AsyncLLM in this process: the floor neither server can beat;
  memserve-rayproxy, memserve-throughput (only if asked for) memserve behind Ray's
            Python proxy actor instead of HAProxy; in Ray Serve's throughput-optimized mode;
  ray-floor-2, ray-floor-1 (only if asked for) the floor of any Ray Serve LLM app
            (benchmarks/ray_floor.py): an ingress relaying to the same LLM deployment with
            none of memserve's logic, and the engine inside the ingress replica.
Both servers get the same streamed chat requests (32-token answers, greedy) over HTTP/SSE
at each concurrency. Reported per side and concurrency: time to first token (p50/p95/p99),
inter-token latency (gaps between streamed chunks, p50/p95), total latency p50 and output
tokens/s; then medians over repeats with their spread, and memserve's ratios to vLLM.
memserve's runs also time a bare `/health` and a response-cache hit, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import servers
from stats import pct

from serve_app.generation import GenerationRequest
from serve_app.settings import AppSettings

logger = logging.getLogger("bench_serving")

TOPICS = ["lighthouses", "honeybees", "volcanoes", "the printing press", "glaciers", "octopuses",
          "the silk road", "comets", "sourdough bread", "rivers", "chess", "the moon"]
MAX_TOKENS = 32
OFF = {"cache": False, "memory": False, "products": False}
SIDES = ("memserve", "vllm", "engine", "memserve-rayproxy", "memserve-throughput", "ray-floor-2", "ray-floor-1")
# memserve as `make run` starts it (configs/serve.env: HAProxy ingress), behind Ray's
# default Python proxy actor instead, or in Ray Serve's throughput-optimized mode (user
# code on the replica's own loop, gRPC between deployments, buffered request logs).
MEMSERVE_ENV = {"memserve": {}, "memserve-rayproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0"},
                "memserve-throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}}


@dataclass
class Sample:
    ttft_ms: float
    total_ms: float
    tokens: int
    prompt_tokens: int
    gaps_ms: list[float] = field(default_factory=list)


class Stopwatch:
    """Times one streamed answer: the first content chunk and the gaps between chunks."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.chunks: list[float] = []

    def chunk(self) -> None:
        self.chunks.append(time.perf_counter())

    def sample(self, tokens: int, prompt_tokens: int) -> Sample:
        end = time.perf_counter()
        first = self.chunks[0] if self.chunks else end
        gaps = [(b - a) * 1000 for a, b in zip(self.chunks, self.chunks[1:], strict=False)]
        return Sample((first - self.started) * 1000, (end - self.started) * 1000, tokens, prompt_tokens, gaps)


def prompt(i: int) -> str:
    return f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]} (part {i})."


def chat_body(model: str, i: int, side: str, system_prompt: str) -> dict[str, Any]:
    """The same prompt on every side. memserve and the floor put the service's system prompt
    before the user's turn themselves; `vllm serve` is sent it as a system message (without
    one, SmolLM2's chat template inserts its own, longer default: 45 prompt tokens, not 40)."""
    system = [{"role": "system", "content": system_prompt}] if side == "vllm" else []
    body: dict[str, Any] = {
        "model": model, "messages": [*system, {"role": "user", "content": prompt(i)}], "max_tokens": MAX_TOKENS,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
    }
    return {**body, "memserve": OFF} if side in MEMSERVE_ENV else body


async def over_http(client: httpx.AsyncClient, body: dict[str, Any]) -> Sample:
    watch, tokens, prompt_tokens = Stopwatch(), 0, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens, prompt_tokens = event["usage"]["completion_tokens"], event["usage"]["prompt_tokens"]
            if any(c["delta"].get("content") for c in event.get("choices", [])):
                watch.chunk()
    return watch.sample(tokens, prompt_tokens)


async def in_process(engine: Any, system_prompt: str, i: int) -> Sample:
    request = GenerationRequest(request_id=f"bench-{uuid.uuid4().hex}", system_prompt=system_prompt,
                                messages=[{"role": "user", "content": prompt(i)}], max_tokens=MAX_TOKENS,
                                temperature=0.0)
    watch, tokens, prompt_tokens = Stopwatch(), 0, 0
    async for chunk in engine.stream(request):
        if chunk.text:
            watch.chunk()
        tokens, prompt_tokens = chunk.completion_tokens, chunk.prompt_tokens
    return watch.sample(tokens, prompt_tokens)


@dataclass
class Level:
    """One side at one concurrency in one repeat."""

    side: str
    concurrency: int
    metrics: dict[str, float]


async def run_level(send: Callable[[int], Awaitable[Sample]], side: str, concurrency: int, requests: int) -> Level:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Sample:
        async with gate:
            return await send(i)

    started = time.perf_counter()
    samples = list(await asyncio.gather(*(one(i) for i in range(requests))))
    wall_s = time.perf_counter() - started
    ttft = [s.ttft_ms for s in samples]
    gaps = [g for s in samples for g in s.gaps_ms]
    metrics = {
        "ttft_p50": pct(ttft, 0.5), "ttft_p95": pct(ttft, 0.95), "ttft_p99": pct(ttft, 0.99),
        "itl_p50": pct(gaps, 0.5), "itl_p95": pct(gaps, 0.95),
        "total_p50": pct([s.total_ms for s in samples], 0.5),
        "tok_s": sum(s.tokens for s in samples) / wall_s, "tokens": statistics.mean(s.tokens for s in samples),
        "prompt_tokens": statistics.mean(s.prompt_tokens for s in samples),
    }
    logger.info("%s c=%d %s", side, concurrency, {k: round(v, 1) for k, v in metrics.items()})
    return Level(side, concurrency, metrics)


def requests_at(concurrency: int, per_level: int) -> int:
    return max(per_level, 2 * concurrency)


async def sweep(send: Callable[[int], Awaitable[Sample]], side: str, levels: list[int], per_level: int) -> list[Level]:
    await send(-1)  # warm-up, not counted
    return [await run_level(send, side, c, requests_at(c, per_level)) for c in levels]


async def http_side(base: str, side: str, settings: AppSettings, levels: list[int], per_level: int) -> list[Level]:
    model = settings.llm.served_model_name
    limits = httpx.Limits(max_connections=max(levels) + 8, max_keepalive_connections=max(levels) + 8)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        async def send(i: int) -> Sample:
            return await over_http(client, chat_body(model, i, side, settings.server.system_prompt))
        levels_out = await sweep(send, side, levels, per_level)
        if side in MEMSERVE_ENV:
            levels_out.append(await health_and_hit(client, side, model))
        return levels_out


async def health_and_hit(client: httpx.AsyncClient, side: str, model: str, rounds: int = 200) -> Level:
    """A bare `/health` through the proxy and a response-cache hit, interleaved so both see
    the same moment of a noisy machine (non-streamed, keep-alive connection)."""
    body = {"model": model, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    (await client.post("/v1/chat/completions", json=body)).raise_for_status()  # fills the cache
    health, hit, server = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        (await client.get("/health")).raise_for_status()
        health.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        answer = (await client.post("/v1/chat/completions", json=body)).json()
        hit.append((time.perf_counter() - started) * 1000)
        if not answer["memserve"]["cached"]:
            raise RuntimeError("expected a response-cache hit")
        server.append(answer["memserve"]["timings_ms"]["total"])
    metrics = {"health_p50": pct(health, 0.5), "hit_p50": pct(hit, 0.5), "hit_p95": pct(hit, 0.95),
               "hit_server_p50": pct(server, 0.5)}
    logger.info("%s /health vs hit %s", side, {k: round(v, 2) for k, v in metrics.items()})
    return Level(side, 0, metrics)


async def engine_side(settings: AppSettings, levels: list[int], per_level: int) -> list[Level]:
    from serve_app.engine import LLMEngine

    engine = LLMEngine(settings.llm)
    try:
        return await sweep(lambda i: in_process(engine, settings.server.system_prompt, i), "engine", levels, per_level)
    finally:
        engine.shutdown()


def without_shedding(config: dict[str, Any]) -> None:
    """The LLM deployment admits as many streams as `vllm serve` would queue: this run is
    about the cost of the path, and the shipped config refuses load past 32 + 16 streams
    (benchmarks/bench_overload.py measures that)."""
    llm = next(d for d in config["applications"][0]["deployments"] if d["name"] == "LLM")
    llm.update(max_ongoing_requests=64, max_queued_requests=64)


def run_side(side: str, directory: Path, settings: AppSettings, levels: list[int], per_level: int,
             env: dict[str, str]) -> list[Level]:
    if side == "engine":
        return asyncio.run(engine_side(settings, levels, per_level))
    if side in MEMSERVE_ENV:
        server = servers.memserve(directory, edit=without_shedding, env={**MEMSERVE_ENV[side], **env})
    elif side.startswith("ray-floor-"):
        server = servers.ray_floor(directory, hops=int(side.rsplit("-", 1)[1]))
    else:
        server = servers.vllm_server(directory, settings.llm)
    with server as base:
        return asyncio.run(http_side(base, side, settings, levels, per_level))


def spread(values: list[float]) -> str:
    fmt = ".1f" if statistics.median(values) < 100 else ".0f"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


COLUMNS = [("ttft_p50", "TTFT p50 ms"), ("ttft_p95", "TTFT p95"), ("ttft_p99", "TTFT p99"),
           ("itl_p50", "ITL p50 ms"), ("itl_p95", "ITL p95"), ("total_p50", "total p50 ms"), ("tok_s", "tokens/s")]


# What each comparison says: memserve's total overhead over `vllm serve`; the part of it that
# is memserve's own code (over the Ray Serve floor); the part that is Ray Serve's path.
COMPARED = (("memserve", "vllm"), ("memserve", "ray-floor-2"), ("ray-floor-2", "vllm"), ("ray-floor-1", "vllm"))


def report(runs: list[Level], levels: list[int], sides: list[str]) -> str:
    def values(side: str, c: int, key: str) -> list[float]:
        return [r.metrics[key] for r in runs if r.side == side and r.concurrency == c]

    lines = ["| c | side | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for c in levels:
        for side in sides:
            if values(side, c, "ttft_p50"):
                lines.append(f"| {c} | {side} | " + " | ".join(spread(values(side, c, k)) for k, _ in COLUMNS) + " |")
        for a, b in COMPARED:
            if values(a, c, "ttft_p50") and values(b, c, "ttft_p50"):
                medians = {side: [statistics.median(values(side, c, k)) for k, _ in COLUMNS] for side in (a, b)}
                ratio = [x / y for x, y in zip(medians[a], medians[b], strict=True)]
                lines.append(f"| {c} | {a} / {b} | " + " | ".join(f"{x:.2f}" for x in ratio)
                             + f" |\n| {c} | {a} - {b} TTFT p50 | {medians[a][0] - medians[b][0]:+.1f} ms |")
    lines += ["", "| side | /health p50 ms | cache hit p50 ms | hit p95 | server time of a hit p50 | hit / health |",
              "|---|---|---|---|---|---|"]
    for side in sides:
        hits = [r for r in runs if r.concurrency == 0 and r.side == side]
        if hits:
            ratio = [r.metrics["hit_p50"] / r.metrics["health_p50"] for r in hits]
            lines.append(f"| {side} | " + " | ".join(spread([r.metrics[k] for r in hits])
                                                      for k in ("health_p50", "hit_p50", "hit_p95", "hit_server_p50"))
                         + f" | {spread(ratio)} |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=16, help="requests per level (at least 2 x concurrency)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES[:3]))
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--memserve-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment for memserve's Ray processes (e.g. Ray Serve flags)")
    args = parser.parse_args()
    settings, levels = AppSettings(), [int(x) for x in args.levels.split(",")]
    env = dict(item.split("=", 1) for item in args.memserve_env)
    runs: list[Level] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for side in args.sides:
                logger.info("repeat %d: %s", repeat + 1, side)
                runs += run_side(side, Path(tmp), settings, levels, args.requests, env)
    text = (f"{args.repeats} repeats; medians (min-max); {MAX_TOKENS}-token streamed answers; "
            f"requests per level: max({args.requests}, 2 x c)\n\n" + report(runs, levels, args.sides))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
