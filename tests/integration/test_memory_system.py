"""The memory system end to end: replicas, read-your-writes, updates, history, forget."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


PEOPLE = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ivo", "Jun"]
HABITS = ["plays the cello on Mondays", "grows tomatoes on Tuesdays", "repairs old clocks on Thursdays",
          "swims in cold lakes on Sundays"]


def test_every_acknowledged_write_is_read_by_any_replica(server: str) -> None:
    """Concurrent writers; right after each ack another client searches with min_seq.
    Two replicas per shard serve those searches; none may miss the write. (The 40 facts
    are far apart, cosine < 0.83, so none is merged into another as a near-duplicate.)"""
    user = f"race-{uuid.uuid4().hex[:8]}"
    facts = [f"{person} {habit}." for person in PEOPLE for habit in HABITS]

    async def one(client: httpx.AsyncClient, text: str) -> str | None:
        ack = (await client.post("/v1/memories", json={"user": user, "text": text})).json()
        found = (await client.post("/v1/memories/search", json={"user": user, "query": text, "k": 1,
                                                                 "min_seq": ack["seq"]})).json()["results"]
        top = found[0] if found else None
        if top is None or top["id"] != ack["ids"][0] or top["text"] != text:
            return f"wrote {ack}, found {found}"
        return None

    async def run() -> list[str | None]:
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            return await asyncio.gather(*(one(client, text) for text in facts))

    misses = [miss for miss in asyncio.run(run()) if miss]
    assert misses == []


def test_update_history_and_forget(http: httpx.Client) -> None:
    user = f"erin-{uuid.uuid4().hex[:8]}"
    added = http.post("/v1/memories", json={"user": user, "text": "I work as a nurse in Leeds."}).json()
    memory_id = added["ids"][0]
    twin = http.post("/v1/memories", json={"user": user, "text": "I work as a nurse in Leeds!"}).json()
    assert twin["ids"] == [memory_id]  # the same fact restated: no second memory
    assert twin["results"][0]["event"] == "NOOP"
    patched = http.patch(f"/v1/memories/{memory_id}",
                         json={"user": user, "text": "I work as a surgeon in York."}).json()
    hit = http.post("/v1/memories/search", json={"user": user, "query": "What is my job?", "k": 1,
                                                  "min_seq": patched["seq"]}).json()["results"][0]
    assert hit["text"] == "I work as a surgeon in York."
    history = http.get(f"/v1/memories/{memory_id}/history", params={"user": user}).json()["history"]
    events = [h["event"] for h in history]
    assert events == ["ADD", "UPDATE"]  # a NOOP writes nothing
    assert http.get("/v1/memories/stats", params={"user": user}).json()["total"] == 1

    chat = {"model": MODEL, "user": user, "max_tokens": 8,
            "messages": [{"role": "user", "content": "Where do I work?"}], "memserve": {"write_back": False}}
    assert http.post("/v1/chat/completions", json=chat).json()["memserve"]["memories"][0]["id"] == memory_id
    forgotten = http.delete(f"/v1/users/{user}").json()
    assert forgotten["deleted"]
    after = http.post("/v1/chat/completions", json=chat).json()["memserve"]
    assert after["memories"] == [] and after["cached"] is False
    search = {"user": user, "query": "job", "min_seq": forgotten["seq"]}
    assert http.post("/v1/memories/search", json=search).json()["results"] == []
    assert http.get(f"/v1/memories/{memory_id}", params={"user": user}).status_code == 404
    assert http.get(f"/v1/memories/{memory_id}/history", params={"user": user}).status_code == 404
    assert http.get("/v1/memories", params={"user": user}).json()["data"] == []


def test_consolidation_runs_on_demand(http: httpx.Client) -> None:
    user = f"fay-{uuid.uuid4().hex[:8]}"
    http.post("/v1/memories", json={"user": user, "text": "My passport expires in March.", "tier": "working",
                                    "importance": 1.0})
    result = http.post("/v1/memories/consolidate", json={"user": user}).json()
    assert set(result["run"]) == {"users", "expired", "promoted", "evicted"} and result["run"]["users"] == 1
    assert result["stats"]["runs"] >= 1


def test_long_memories_are_trimmed_to_the_window_not_a_400(http: httpx.Client) -> None:
    """20 memories of ~250 tokens each would take ~5,000 tokens of the 2,048-token window:
    the real engine's tokenizer fits what it can, the question stays whole, and the
    response says how many memories were left out."""
    user = f"gus-{uuid.uuid4().hex[:8]}"
    story = "we walked along the river, fed the ducks, talked about books and old friends, and "
    memories = [{"text": f"Diary {i}: on day {i} of the trip " + story * 14} for i in range(20)]
    assert http.post("/v1/memories", json={"user": user, "memories": memories, "dedup": False}).status_code == 200
    chat = {"model": MODEL, "user": user, "max_tokens": 8, "memserve": {"k": 20, "write_back": False, "cache": False},
            "messages": [{"role": "user", "content": "Where did we walk?"}]}
    answer = http.post("/v1/chat/completions", json=chat)
    assert answer.status_code == 200, answer.text
    info = answer.json()["memserve"]
    assert info["trimmed"]["memories"] > 0 and len(info["memories"]) > 0
    assert len(info["memories"]) + info["trimmed"]["memories"] == 20
    assert answer.json()["usage"]["prompt_tokens"] <= 2048 - 8
