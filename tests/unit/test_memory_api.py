"""The complete memory API over fake services: restatements, update, history, stats, forget,
consolidation, caps, expiry."""

from __future__ import annotations

import asyncio
import time

from fastapi.testclient import TestClient

from serve_app.core.consolidation import ConsolidationSettings, plan_promotions, promotion_score
from serve_app.core.store import MemoryRecord
from serve_app.core.tiers import TierPolicy, TierRegistry, default_tier_policies
from serve_app.core.write_plan import Incoming, plan_writes
from serve_app.runtime import Runtime
from tests.fakes import FakeGraph, bag_of_words

MODEL = "smollm2-135m-instruct"


def add(client: TestClient, user: str, *texts: str, **extra: object) -> dict:  # type: ignore[type-arg]
    body = {"user": user, "memories": [{"text": t, **extra} for t in texts]}
    response = client.post("/v1/memories", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def search(client: TestClient, user: str, query: str, **extra: object) -> list[dict]:  # type: ignore[type-arg]
    return client.post("/v1/memories/search", json={"user": user, "query": query, **extra}).json()["results"]


def test_restating_a_memory_never_adds_a_second_one(client: TestClient) -> None:
    first = add(client, "alice", "my favourite colour is blue")
    # Word for word (case and punctuation aside): nothing to write, the same id.
    again = add(client, "alice", "My favourite colour is blue!")
    assert again["ids"] == first["ids"] and again["seq"] >= first["seq"]
    assert again["results"] == [{"id": first["ids"][0], "event": "NOOP", "reason": "identical", "merged_into": None}]
    # Reworded (same words, so cosine 1.0 in the fake embedder): merged, the newer wording kept.
    reworded = add(client, "alice", "Blue is my favourite colour.")
    assert reworded["ids"] == first["ids"] and reworded["seq"] > first["seq"]
    assert reworded["results"][0]["event"] == "MERGE" and reworded["results"][0]["merged_into"] == first["ids"][0]
    listed = client.get("/v1/memories", params={"user": "alice"}).json()["data"]
    assert [m["text"] for m in listed] == ["Blue is my favourite colour."]
    history = client.get(f"/v1/memories/{first['ids'][0]}/history", params={"user": "alice"}).json()["history"]
    assert [h["event"] for h in history] == ["ADD", "MERGE"]
    assert history[1]["old_text"] == "my favourite colour is blue"
    # Twins inside one batch collapse too; dedup can be switched off per request.
    batch = add(client, "bob", "likes jazz", "Likes jazz.", "plays chess")
    assert batch["ids"][0] == batch["ids"][1] != batch["ids"][2]
    assert [r["event"] for r in batch["results"]] == ["ADD", "NOOP", "ADD"]
    raw = client.post("/v1/memories", json={"user": "bob", "text": "likes jazz", "dedup": False}).json()
    assert raw["ids"][0] not in batch["ids"] and raw["results"][0]["event"] == "ADD"
    # Another user's identical memory is never a duplicate.
    assert add(client, "carol", "my favourite colour is blue")["ids"] != first["ids"]


def test_twins_within_a_batch_fold_into_one_draft() -> None:
    texts = ("a b", "c d", "A b!", "c d e")
    items = [Incoming(t, "long_term", 0.5, bag_of_words(t)) for t in texts]
    plan = plan_writes(items, [[] for _ in items], 0.95)
    assert [(s.draft, s.event) for s in plan.steps] == [(0, "ADD"), (1, "ADD"), (0, "NOOP"), (2, "ADD")]


def test_patch_reembeds_and_records_history(client: TestClient) -> None:
    memory_id = add(client, "alice", "works as a baker")["ids"][0]
    response = client.patch(f"/v1/memories/{memory_id}", json={"user": "alice", "text": "works as a pilot",
                                                               "importance": 0.9, "tier": "semantic"})
    assert response.status_code == 200
    body = response.json()
    assert body["memory"]["text"] == "works as a pilot" and body["memory"]["tier"] == "semantic"
    assert body["memory"]["expires_at"] is None  # semantic memories never expire
    assert [r["text"] for r in search(client, "alice", "pilot", min_seq=body["seq"])] == ["works as a pilot"]
    assert "works as a baker" not in [r["text"] for r in search(client, "alice", "baker")]
    history = client.get(f"/v1/memories/{memory_id}/history", params={"user": "alice"}).json()["history"]
    assert [(h["event"], h["old_text"], h["new_text"], h["actor"]) for h in history] == [
        ("ADD", None, "works as a baker", "api"), ("UPDATE", "works as a baker", "works as a pilot", "api")]
    # Someone else's id, an unknown id and an empty patch.
    assert client.patch(f"/v1/memories/{memory_id}", json={"user": "bob", "text": "x"}).status_code == 404
    assert client.patch("/v1/memories/mem-nope", json={"user": "alice", "text": "x"}).status_code == 404
    assert client.patch(f"/v1/memories/{memory_id}", json={"user": "alice"}).status_code == 400
    assert client.get(f"/v1/memories/{memory_id}/history", params={"user": "bob"}).status_code == 404


def test_stats_per_tier(client: TestClient) -> None:
    add(client, "alice", "one", "two")
    add(client, "alice", "three", tier="working")
    stats = client.get("/v1/memories/stats", params={"user": "alice"}).json()
    assert stats["total"] == 3
    assert stats["tiers"]["long_term"]["count"] == 2
    assert stats["tiers"]["working"] == {"count": 1, "cap": 15, "ttl_s": 900.0}


def test_forget_user_leaves_nothing_anywhere(client: TestClient, graph: FakeGraph) -> None:
    ids = add(client, "alice", "alice's diary entry", "alice's address is 12 Elm St")["ids"]
    add(client, "bob", "bob's note")
    chat = {"model": MODEL, "user": "alice", "messages": [{"role": "user", "content": "address?"}],
            "memserve": {"write_back": False}}
    client.post("/v1/chat/completions", json=chat)
    assert asyncio.run(graph.cache.stats())["entries"] == 1
    forgotten = client.delete("/v1/users/alice").json()
    assert forgotten["deleted"] and forgotten["seq"] > 0
    assert client.get("/v1/memories", params={"user": "alice"}).json()["data"] == []
    assert search(client, "alice", "diary address Elm") == []
    for memory_id in ids:
        assert client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).status_code == 404
        assert client.get(f"/v1/memories/{memory_id}/history", params={"user": "alice"}).status_code == 404
    assert client.get("/v1/memories/stats", params={"user": "alice"}).json()["total"] == 0
    assert asyncio.run(graph.cache.stats())["entries"] == 0
    answer = client.post("/v1/chat/completions", json=chat).json()
    assert answer["memserve"]["memories"] == [] and not answer["memserve"]["cached"]
    assert [m["text"] for m in client.get("/v1/memories", params={"user": "bob"}).json()["data"]] == ["bob's note"]


def test_search_filters_through_api(client: TestClient) -> None:
    client.post("/v1/memories", json={"user": "alice", "memories": [
        {"text": "dinner at Nopa", "metadata": {"kind": "food"}},
        {"text": "dinner meeting with the board", "metadata": {"kind": "work"}, "tier": "episodic"}]})
    food = search(client, "alice", "dinner", filters={"metadata": {"kind": "food"}})
    assert [r["text"] for r in food] == ["dinner at Nopa"] and food[0]["metadata"] == {"kind": "food"}
    episodic = search(client, "alice", "dinner", tiers=["episodic"])
    assert [r["text"] for r in episodic] == ["dinner meeting with the board"]
    assert search(client, "alice", "dinner", filters={"created_after": time.time() + 3600}) == []


def record(tier: str, importance: float, access: int, age_s: float, now: float) -> MemoryRecord:
    return MemoryRecord(key=1, id="m", user="u", text="t", tier=tier, importance=importance, metadata={},
                        created_at=now - age_s, updated_at=now - age_s, expires_at=None, access_count=access,
                        last_accessed=None)


def test_promotion_rules() -> None:
    now, tiers, s = 1e9, TierRegistry(default_tier_policies()), ConsolidationSettings()
    strong = record("working", 1.0, 5, 600, now)  # important, used, 2/3 of its TTL old
    weak = record("working", 0.2, 0, 10, now)
    working = tiers.policy("working")
    assert promotion_score(strong, now, working, s) >= 0.75 > promotion_score(weak, now, working, s)
    plan = plan_promotions([strong, weak, record("semantic", 1.0, 9, 1e6, now)], now, tiers, s)
    assert [(p.record.tier, p.to_tier) for p in plan] == [("working", "short_term")]


def test_consolidation_promotes_sweeps_and_reports(client: TestClient, graph: FakeGraph) -> None:
    important = add(client, "alice", "never forget: allergic to penicillin", tier="working", importance=1.0)["ids"][0]
    add(client, "alice", "passing thought", tier="working", importance=0.1)
    for _ in range(5):  # used often
        search(client, "alice", "penicillin allergy")
    graph.maintainer.settings.importance_weight, graph.maintainer.settings.age_weight = 0.6, 0.0
    result = client.post("/v1/memories/consolidate", json={"user": "alice"}).json()
    assert result["run"]["promoted"] == 1
    assert result["stats"]["promotions_by_tier"] == {"working->short_term": 1}
    promoted = client.get(f"/v1/memories/{important}", params={"user": "alice"}).json()
    assert promoted["tier"] == "short_term"
    history = client.get(f"/v1/memories/{important}/history", params={"user": "alice"}).json()["history"]
    assert history[-1]["event"] == "PROMOTE" and history[-1]["actor"] == "consolidator"
    assert client.get("/v1/memories/consolidation").json()["total_promotions"] == 1


def test_full_tier_evicts_lowest_scoring(client: TestClient, settings, graph: FakeGraph) -> None:  # type: ignore[no-untyped-def]
    settings.memory.tiers["working"] = TierPolicy(cap=3, ttl_s=900)
    for i, importance in enumerate([0.9, 0.1, 0.8, 0.7]):
        add(client, "alice", f"note number {i} about topic {'abcd'[i]}", tier="working", importance=importance)
    texts = [m["text"] for m in client.get("/v1/memories", params={"user": "alice", "tier": "working"}).json()["data"]]
    assert len(texts) == 3 and "note number 1 about topic b" not in texts


def test_expired_memories_vanish_and_are_swept(client: TestClient, settings, graph: FakeGraph) -> None:  # type: ignore[no-untyped-def]
    settings.memory.tiers["working"] = TierPolicy(cap=15, ttl_s=0.2)
    memory_id = add(client, "alice", "a fleeting thought", tier="working")["ids"][0]
    assert len(search(client, "alice", "fleeting thought")) == 1
    time.sleep(0.3)
    assert search(client, "alice", "fleeting thought") == []
    assert client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).status_code == 404
    assert client.post("/v1/memories/consolidate", json={"user": "alice"}).json()["run"]["expired"] == 1
    history = client.get(f"/v1/memories/{memory_id}/history", params={"user": "alice"}).json()["history"]
    assert history[-1]["event"] == "EXPIRE"



def runtime_of(client: TestClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]  # TestClient types its app as ASGI
    return runtime


def test_a_search_past_its_deadline_is_a_503_to_retry(client: TestClient, graph: FakeGraph) -> None:
    """A replica on a lost node answers nothing for tens of seconds: the search gives up at
    embed_timeout_s + search_timeout_s with a retryable 503, and works again after."""
    add(client, "alice", "my cat is called Miso")
    runtime_of(client).memory.lookup_deadline_s = 0.2
    graph.embedder.delay_s = 1.0
    started = time.monotonic()
    response = client.post("/v1/memories/search", json={"user": "alice", "query": "cat"})
    assert response.status_code == 503 and time.monotonic() - started < 0.9
    assert response.json()["error"]["code"] == "unavailable" and response.headers["retry-after"] == "1"
    assert response.json()["error"]["message"].startswith("the memory search did not answer within 0.2 s")
    graph.embedder.delay_s = 0.0
    assert [r["text"] for r in search(client, "alice", "cat")] == ["my cat is called Miso"]


def test_the_lookup_deadline_is_the_sum_of_the_stage_deadlines(client: TestClient) -> None:
    runtime = runtime_of(client)
    server = runtime.settings.server
    assert runtime.memory.lookup_deadline_s == server.embed_timeout_s + server.search_timeout_s


def test_a_write_past_its_deadline_is_a_503_and_writes_nothing(client: TestClient, graph: FakeGraph) -> None:
    """A write waits on the Embedder and a shard before it commits: past its deadline it is
    refused whole (nothing stored, so a retry is safe), and works again after."""
    runtime_of(client).memory.lookup_deadline_s = 0.2
    graph.embedder.delay_s = 1.0
    started = time.monotonic()
    response = client.post("/v1/memories", json={"user": "alice", "text": "my cat is called Miso"})
    assert response.status_code == 503 and time.monotonic() - started < 0.9
    assert response.json()["error"]["code"] == "unavailable" and response.headers["retry-after"] == "1"
    graph.embedder.delay_s = 0.0
    assert client.get("/v1/memories", params={"user": "alice"}).json()["data"] == []
    add(client, "alice", "my cat is called Miso")
    assert [r["text"] for r in search(client, "alice", "cat")] == ["my cat is called Miso"]


def test_a_batch_write_gets_time_per_item(client: TestClient) -> None:
    """A batch embeds every item, so its deadline grows with it (`WRITE_S_PER_ITEM`): with
    no fixed allowance left, 20 items still have 10 s."""
    runtime_of(client).memory.lookup_deadline_s = 0.0
    response = client.post("/v1/memories", json={"user": "bob", "memories": [{"text": f"fact {i}"} for i in range(20)],
                                                  "dedup": False})
    assert response.status_code == 200 and len(response.json()["ids"]) == 20
