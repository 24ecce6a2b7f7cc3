"""The fast path over fake services: single-flight, semantic cache scopes, products and
quick replies, fan-out vs sequential, cache and metrics endpoints, WebSocket."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from serve_app.chat.pipeline import ChatPipeline
from serve_app.clients import LocalEndpoint, NearCacheClient
from serve_app.core.decision import DecisionSettings, decide, has_product_keyword, parse_constraints
from serve_app.generation import GenerationResult
from serve_app.protocol import ChatCompletionRequest
from tests.fakes import FakeGraph

MODEL = "smollm2-135m-instruct"
CATALOG = {"products": [
    {"name": "Trail Runner 2", "description": "light running shoes for trails", "category": "shoes", "price": 89,
     "tags": ["running", "outdoor"]},
    {"name": "City Walker", "description": "comfortable walking shoes", "category": "shoes", "price": 45,
     "tags": "walking, everyday"},
    {"name": "Summit Pack", "description": "hiking backpack 30 litres", "category": "bags", "price": 120,
     "tags": ["hiking"]},
]}



def chat(text: str, user: str | None = None, **memserve: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": text}], user=user,
                                 memserve={"write_back": False, **memserve})


async def answer(p: ChatPipeline, request: ChatCompletionRequest):  # type: ignore[no-untyped-def]
    prepared = await p.prepare_chat(request)
    result = GenerationResult.collect([c async for c in p.stream(prepared)])
    return result, prepared.info


async def test_concurrent_identical_requests_generate_once(settings, graph, memory, pipeline) -> None:  # type: ignore[no-untyped-def]
    graph.llm.delay_s = 0.2
    p = pipeline
    results = await asyncio.gather(*(answer(p, chat("what is the tallest mountain?")) for _ in range(6)))
    await p.drain()
    assert graph.llm.generations == 1
    assert len({r.text for r, _ in results}) == 1
    kinds = sorted(str(info.cache) for _, info in results)
    assert kinds.count("single_flight") == 5 and kinds.count("None") == 1
    assert (await graph.cache.stats())["dedup_hits"] == 5


async def test_followers_generate_when_the_leader_fails(settings, graph, memory, pipeline) -> None:  # type: ignore[no-untyped-def]
    p = pipeline
    leader = await p.prepare_chat(chat("question"))
    assert leader.leader
    follower = asyncio.ensure_future(p.prepare_chat(chat("question")))
    await asyncio.sleep(0.05)
    stream = p.stream(leader)
    await anext(stream)
    await stream.aclose()  # the leader's client went away before the end
    await p.drain()
    prepared = await asyncio.wait_for(follower, 5)
    assert prepared.cached is None and prepared.generation.request_id  # it generates itself
    assert prepared.info.timings_ms["single_flight_wait"] < 5000


async def test_semantic_cache_never_crosses_users(settings, graph, memory, pipeline) -> None:  # type: ignore[no-untyped-def]
    settings.cache.semantic = True
    settings.cache.semantic_threshold = 0.8
    p = pipeline
    await answer(p, chat("what is the capital city of France", user="alice"))
    _, bob = await answer(p, chat("what is the capital city of France?", user="bob"))
    assert not bob.cached
    _, again = await answer(p, chat("what's the capital city of France?", user="alice"))
    assert again.cached and again.cache == "semantic" and again.cache_similarity >= 0.8
    assert graph.llm.generations == 2


async def test_fanout_and_sequential_give_the_same_answer(settings, graph, memory, pipeline) -> None:  # type: ignore[no-untyped-def]
    from serve_app.protocol import MemoryIn

    await memory.add("alice", [MemoryIn(text="my cat is called Miso")])
    p = pipeline
    fast, fast_info = await answer(p, chat("what is my cat called?", user="alice", cache=False))
    slow, slow_info = await answer(p, chat("what is my cat called?", user="alice", cache=False, fanout=False))
    assert fast.text == slow.text and fast_info.memories == slow_info.memories


def test_decision_rules() -> None:
    s = DecisionSettings()
    assert has_product_keyword("Can you recommend running shoes?", s.product_keywords)
    assert not has_product_keyword("What is the capital of France?", s.product_keywords)
    c = parse_constraints("I'd like shoes under $60 please", ["shoes", "bags"])
    assert (c.price_max, c.category, c.price_min) == (60.0, "shoes", None)
    assert decide("hello", None, {}, [], s).intent == "general"
    assert decide("buy a bag over 100", None, {}, ["bags"], s).constraints.price_min == 100.0


def test_product_questions_get_products_and_others_do_not(client: TestClient) -> None:
    loaded = client.post("/v1/catalog", json=CATALOG).json()
    assert loaded["count"] == 3
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Can you recommend shoes under $60?"}]}
    info = client.post("/v1/chat/completions", json=body).json()["memserve"]
    assert info["intent"] == "product"
    assert [p["name"] for p in info["products"]] == ["City Walker"]  # the only shoes under 60
    assert 2 <= len(info["quick_replies"]) <= 4 and "City Walker" in info["quick_replies"][0]
    plain = {"model": MODEL, "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
    other = client.post("/v1/chat/completions", json=plain).json()["memserve"]
    assert other["products"] == [] and other["intent"] != "product" and 2 <= len(other["quick_replies"]) <= 4


def test_catalog_csv_and_bad_catalogs(client: TestClient) -> None:
    csv = "name,description,category,price,tags\nMug,ceramic mug,kitchen,12.5,coffee;tea\n"
    assert client.post("/v1/catalog", content=csv, headers={"content-type": "text/csv"}).json()["count"] == 1
    bad = client.post("/v1/catalog", content="name,price\nx,notanumber\n", headers={"content-type": "text/csv"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "products"
    assert client.post("/v1/catalog", json={"products": []}).status_code == 400
    assert client.post("/v1/catalog", json={"products": [{"name": "x", "price": -1}]}).status_code == 400
    # The catalog's namespace is not reachable as a user.
    assert client.get("/v1/memories", params={"user": "__catalog__"}).status_code == 400
    assert client.post("/v1/memories", json={"user": "__catalog__", "text": "x"}).status_code == 400


def test_cache_stats_clear_and_metrics(client: TestClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    first = client.post("/v1/chat/completions", json=body).json()
    second = client.post("/v1/chat/completions", json=body).json()
    assert not first["memserve"]["cached"] and second["memserve"]["cache"] == "exact"
    stats = client.get("/v1/cache/stats").json()
    assert stats["hits"] == 1 and stats["entries"] == 1 and 0 < stats["hit_rate"] <= 1
    assert client.post("/v1/cache/clear", json={}).json()["cleared"] == 1
    assert not client.post("/v1/chat/completions", json=body).json()["memserve"]["cached"]
    metrics = client.get("/v1/metrics").json()
    assert {"embedder_cache", "shards"} <= set(metrics) and len(metrics["shards"]) == 2
    ops = metrics["operations"]
    assert ops["request.generated"]["count"] == 2 and ops["request.cached"]["count"] == 1
    assert set(ops["stage.total"]) == {"count", "mean", "p50", "p95", "p99"}


def test_websocket_round_trip_and_bad_messages(client: TestClient) -> None:
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_text("{not json")
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert ws.receive_json()["error"]["code"] == "model_not_found"
        for question in ("hello", "and again"):
            ws.send_json({"model": MODEL, "messages": [{"role": "user", "content": question}]})
            events = []
            while not events or events[-1]["type"] != "done":
                events.append(ws.receive_json())
            assert events[0]["type"] == "token" and events[-1]["usage"]["completion_tokens"] >= 1
            assert "timings_ms" in events[-1]["memserve"]


async def test_near_cache_answers_locally_and_clears(graph: FakeGraph) -> None:
    near = NearCacheClient(LocalEndpoint(graph.cache), max_entries=10, ttl_s=60)
    await near.put("user:a:1:k", {"text": "x"})
    await graph.cache.clear()  # the shared cache lost it: the near cache still answers
    hit = await near.get("user:a:1:k")
    assert hit is not None and hit.value == {"text": "x"}
    assert (await near.stats())["near_hits"] == 1
    await near.clear("user:a")
    assert await near.get("user:a:1:k") is None


def test_without_a_catalog_quick_replies_come_beside_generation(client: TestClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there, how are you?"}],
            "memserve": {"cache": False}}
    info = client.post("/v1/chat/completions", json=body).json()["memserve"]
    assert "decision" not in info["timings_ms"] and "quick_replies" in info["timings_ms"]
    assert info["intent"] == "greeting" and 2 <= len(info["quick_replies"]) <= 4
    assert info["products"] == []


def test_metrics_sink_sees_every_observation() -> None:
    from serve_app.core.metrics import Metrics

    seen: list[tuple[str, float]] = []
    metrics = Metrics(sink=lambda name, value: seen.append((name, value)))
    metrics.observe_all({"embed": 3.0, "total": 40.0}, prefix="stage.")
    metrics.observe("request.generated", 40.0)
    assert seen == [("stage.embed", 3.0), ("stage.total", 40.0), ("request.generated", 40.0)]
    assert metrics.summary()["stage.total"]["count"] == 1
