"""The fast path live: single-flight, invalidation, products, WebSocket."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import websockets

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


def ask(text: str, **extra: object) -> dict[str, object]:
    messages = [{"role": "user", "content": text}]
    return {"model": MODEL, "max_tokens": 16, "temperature": 0, "messages": messages, **extra}


def test_identical_concurrent_requests_share_one_generation(server: str, http: httpx.Client) -> None:
    question = ask(f"Name a colour of the rainbow ({uuid.uuid4().hex[:6]}).")
    before = http.get("/v1/cache/stats").json()["dedup_hits"]

    async def run() -> list[dict]:  # type: ignore[type-arg]
        async with httpx.AsyncClient(base_url=server, timeout=120) as client:
            replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=question) for _ in range(6)))
        return [r.json() for r in replies]

    replies = run_sync(run())
    generated = [r for r in replies if not r["memserve"]["cached"]]
    assert len(generated) == 1, [
        (r["memserve"]["cache"], r["memserve"]["degraded"], r["memserve"]["timings_ms"]) for r in replies
    ]
    assert len({r["choices"][0]["message"]["content"] for r in replies}) == 1
    assert http.get("/v1/cache/stats").json()["dedup_hits"] - before == 5


def run_sync(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_cached_answer_is_not_served_after_memories_change(http: httpx.Client) -> None:
    user = f"gil-{uuid.uuid4().hex[:8]}"
    question = ask("What do I do on weekends?", user=user, memserve={"write_back": False})
    assert not http.post("/v1/chat/completions", json=question).json()["memserve"]["cached"]
    hit = http.post("/v1/chat/completions", json=question).json()["memserve"]
    assert hit["cached"] and hit["cache"] == "exact"
    http.post("/v1/memories", json={"user": user, "text": "On weekends I go sailing on the lake."})
    fresh = http.post("/v1/chat/completions", json=question).json()["memserve"]
    assert not fresh["cached"] and "On weekends I go sailing on the lake." in [m["text"] for m in fresh["memories"]]
    http.post("/v1/cache/clear", json={"user": user})
    assert not http.post("/v1/chat/completions", json=question).json()["memserve"]["cached"]


def test_streamed_cache_hit_is_streamed(http: httpx.Client) -> None:
    question = ask(f"Say something about owls ({uuid.uuid4().hex[:6]}).")
    http.post("/v1/chat/completions", json=question)
    with http.stream("POST", "/v1/chat/completions", json={**question, "stream": True}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert sum(1 for e in events if e["choices"] and e["choices"][0]["delta"].get("content")) >= 2
    assert events[-1]["memserve"]["cached"] is True


def test_product_questions_get_catalog_products(http: httpx.Client) -> None:
    catalog = {"products": [
        {"name": "Aero Kettle", "description": "fast electric kettle, 1.7 litres", "category": "kitchen", "price": 39,
         "tags": ["tea", "coffee"]},
        {"name": "Barista Pro", "description": "espresso machine with milk frother", "category": "kitchen",
         "price": 349, "tags": ["coffee"]},
        {"name": "Trail Runner", "description": "running shoes for trails", "category": "shoes", "price": 95,
         "tags": ["running"]},
    ]}
    assert http.post("/v1/catalog", json=catalog).json()["count"] == 3
    info = http.post("/v1/chat/completions", json=ask("Can you recommend a coffee machine for my kitchen?",
                                                      memserve={"cache": False})).json()["memserve"]
    assert info["intent"] == "product" and info["products"][0]["name"] == "Barista Pro"
    cheap = http.post("/v1/chat/completions", json=ask("I want to buy something for the kitchen under $50",
                                                       memserve={"cache": False})).json()["memserve"]
    assert [p["name"] for p in cheap["products"]] == ["Aero Kettle"]
    plain = http.post("/v1/chat/completions", json=ask("Why do leaves change colour in autumn?",
                                                       memserve={"cache": False})).json()["memserve"]
    assert plain["products"] == [] and 2 <= len(plain["quick_replies"]) <= 4


def test_websocket_chat(server: str) -> None:
    async def run() -> list[dict]:  # type: ignore[type-arg]
        received = []
        async with websockets.connect(server.replace("http://", "ws://") + "/ws/chat") as ws:
            await ws.send("this is not json")
            received.append(json.loads(await ws.recv()))
            for text in ("Hello!", "What is two plus two?"):
                await ws.send(json.dumps(ask(text, memserve={"cache": False})))
                while True:
                    event = json.loads(await ws.recv())
                    received.append(event)
                    if event["type"] == "done":
                        break
        return received

    events = asyncio.run(run())
    assert events[0]["type"] == "error" and events[0]["error"]["type"] == "invalid_request_error"
    dones = [e for e in events if e["type"] == "done"]
    assert len(dones) == 2 and all(d["usage"]["completion_tokens"] > 0 and "timings_ms" in d["memserve"] for d in dones)
    tokens = [e for e in events if e["type"] == "token"]
    assert len(tokens) >= 4 and all(isinstance(t["content"], str) for t in tokens)


def test_metrics_report_stages_and_deployments(http: httpx.Client) -> None:
    http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["same text", "same text"]})
    metrics = http.get("/v1/metrics").json()
    assert metrics["embedder_cache"]["hits"] + metrics["embedder_cache"]["misses"] > 0
    assert [s["shard"] for s in metrics["shards"]] == [0, 1]
    assert metrics["operations"]["stage.total"]["count"] > 0
