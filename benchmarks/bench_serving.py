"""Serving latency: memserve's whole graph vs. the bare vLLM engine, in one run.

    make run                                   # in one terminal
    .venv/bin/python benchmarks/bench_serving.py [--url http://127.0.0.1:8000]

For concurrency 1 and 8, sends the same chat prompts (32-token answers, greedy; response
cache, memories and product decisions off, so both sides get identical prompts and the
difference is the serving path itself) through the running app over HTTP/SSE, then straight to a bare AsyncLLM
engine built from the same settings in this process, and prints time-to-first-token and
total latency p50/p95 for both with the app/engine ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from serve_app.core.prompt import build_messages
from serve_app.generation import GenerationRequest
from serve_app.settings import AppSettings

logger = logging.getLogger("bench_serving")

TOPICS = ["lighthouses", "honeybees", "volcanoes", "the printing press", "glaciers", "octopuses",
          "the silk road", "comets", "sourdough bread", "rivers", "chess", "the moon"]
MAX_TOKENS = 32


@dataclass
class Sample:
    ttft_s: float
    total_s: float
    tokens: int


def prompts(n: int) -> list[str]:
    return [f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]} (part {i})." for i in range(n)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def via_app(client: httpx.AsyncClient, model: str, prompt: str) -> Sample:
    body = {
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
        "memserve": {"cache": False, "memory": False, "products": False},
    }
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if first is None and any(c["delta"].get("content") for c in event.get("choices", [])):
                first = time.perf_counter()
    end = time.perf_counter()
    return Sample((first or end) - started, end - started, tokens)


async def via_engine(engine, system_prompt: str, prompt: str) -> Sample:  # type: ignore[no-untyped-def]
    messages = build_messages(system_prompt, [{"role": "user", "content": prompt}], [])
    request = GenerationRequest(
        request_id=f"bench-{uuid.uuid4().hex}", messages=messages, max_tokens=MAX_TOKENS, temperature=0.0
    )
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for chunk in engine.stream(request):
        if first is None and chunk.text:
            first = time.perf_counter()
        tokens = chunk.completion_tokens
    end = time.perf_counter()
    return Sample((first or end) - started, end - started, tokens)


async def run_level(send: Callable[[str], Awaitable[Sample]], concurrency: int, requests: int) -> list[Sample]:
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> Sample:
        async with gate:
            return await send(prompt)

    return list(await asyncio.gather(*(one(p) for p in prompts(requests))))


def summary(samples: list[Sample]) -> dict[str, float]:
    ttft = [s.ttft_s * 1000 for s in samples]
    total = [s.total_s * 1000 for s in samples]
    return {
        "ttft_p50": statistics.median(ttft), "ttft_p95": pct(ttft, 0.95),
        "total_p50": statistics.median(total), "total_p95": pct(total, 0.95),
        "tokens_mean": statistics.mean(s.tokens for s in samples),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--levels", default="1,8")
    args = parser.parse_args()
    settings = AppSettings()
    levels = [int(x) for x in args.levels.split(",")]
    results: dict[tuple[str, int], dict[str, float]] = {}

    async with httpx.AsyncClient(base_url=args.url, timeout=300) as client:
        model = settings.llm.served_model_name
        await via_app(client, model, "warm up")
        for level in levels:
            results[("app", level)] = summary(
                await run_level(lambda p: via_app(client, model, p), level, args.requests)
            )

    from serve_app.engine import LLMEngine

    engine = LLMEngine(settings.llm)
    await via_engine(engine, settings.server.system_prompt, "warm up")
    for level in levels:
        results[("engine", level)] = summary(
            await run_level(lambda p: via_engine(engine, settings.server.system_prompt, p), level, args.requests)
        )
    engine.shutdown()

    print(f"\n{args.requests} requests per level, {MAX_TOKENS}-token answers, medians and p95 in ms")
    print(f"{'conc':>4} {'path':>7} {'ttft p50':>9} {'ttft p95':>9} {'total p50':>10} {'total p95':>10} {'tokens':>7}")
    for level in levels:
        for path in ("app", "engine"):
            r = results[(path, level)]
            print(f"{level:>4} {path:>7} {r['ttft_p50']:>9.1f} {r['ttft_p95']:>9.1f} "
                  f"{r['total_p50']:>10.1f} {r['total_p95']:>10.1f} {r['tokens_mean']:>7.1f}")
        app, bare = results[("app", level)], results[("engine", level)]
        print(f"{level:>4} {'ratio':>7} {app['ttft_p50'] / bare['ttft_p50']:>9.2f} "
              f"{app['ttft_p95'] / bare['ttft_p95']:>9.2f} "
              f"{app['total_p50'] / bare['total_p50']:>10.2f} {app['total_p95'] / bare['total_p95']:>10.2f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
