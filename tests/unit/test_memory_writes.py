"""Writes that never lose a fact, through the API over the in-process graph: a close
embedding merges only a restatement; every item reports ADD, MERGE or NOOP."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from serve_app.core.retrieval import NearMemory
from serve_app.memory_service import MemoryService
from serve_app.protocol import MemoryIn
from serve_app.settings import AppSettings
from tests.fakes import FakeGraph

Json = dict[str, Any]


def write(client: TestClient, user: str, *texts: str, **extra: object) -> Json:
    body = {"user": user, "memories": [{"text": t, **extra} for t in texts]}
    response = client.post("/v1/memories", json=body)
    assert response.status_code == 200, response.text
    result: Json = response.json()
    assert result["ids"] == [r["id"] for r in result["results"]]  # the old field agrees with the new
    return result


def listed(client: TestClient, user: str) -> list[str]:
    data = client.get("/v1/memories", params={"user": user, "limit": 1000}).json()["data"]
    return [m["text"] for m in data]


def found(client: TestClient, user: str, query: str, **extra: object) -> list[str]:
    body = {"user": user, "query": query, **extra}
    return [r["text"] for r in client.post("/v1/memories/search", json=body).json()["results"]]


def test_monday_then_friday_are_two_memories(client: TestClient, settings: AppSettings) -> None:
    # The fake embedder puts the two at cosine 0.875; lower the bar so only the rule keeps them apart.
    settings.memory.dedup_threshold = 0.8
    monday = write(client, "alice", "I met Sarah at the gym on Monday.")
    friday = write(client, "alice", "I met Sarah at the gym on Friday.")
    assert friday["results"] == [{"id": friday["ids"][0], "event": "ADD", "reason": "time", "merged_into": None}]
    assert friday["ids"] != monday["ids"]
    assert sorted(listed(client, "alice")) == ["I met Sarah at the gym on Friday.", "I met Sarah at the gym on Monday."]
    assert sorted(found(client, "alice", "when did I meet Sarah at the gym?", min_seq=friday["seq"])) == [
        "I met Sarah at the gym on Friday.", "I met Sarah at the gym on Monday."]


def test_numbered_records_stay_apart(client: TestClient) -> None:
    # Digits are invisible to the fake embedder: all 170 texts are at cosine 1.0.
    ids = [write(client, "alice", f"record number {i}")["ids"][0] for i in range(1, 171)]
    assert len(set(ids)) == 170 and len(listed(client, "alice")) == 170
    batch = write(client, "bob", *(f"record number {i}" for i in range(1, 171)))
    assert len(set(batch["ids"])) == 170 and {r["event"] for r in batch["results"]} == {"ADD"}
    # A repeat still finds its own record among 170 equally close ones.
    again = write(client, "alice", "Record number 57.")
    assert again["results"][0] == {"id": ids[56], "event": "NOOP", "reason": "identical", "merged_into": None}


def test_an_exact_repeat_is_a_noop(client: TestClient) -> None:
    first = write(client, "alice", "My dog is called Rex")
    again = write(client, "alice", "my dog is called rex!")
    assert again["results"] == [{"id": first["ids"][0], "event": "NOOP", "reason": "identical", "merged_into": None}]
    assert again["seq"] == first["seq"]  # nothing written: the seq that made the memory readable
    assert listed(client, "alice") == ["My dog is called Rex"]
    memory_id = first["ids"][0]
    history = client.get(f"/v1/memories/{memory_id}/history", params={"user": "alice"}).json()["history"]
    assert [h["event"] for h in history] == ["ADD"]
    assert client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).json()["access_count"] == 1
    # Repeated with more importance it does change the memory: reported (and recorded) as a MERGE.
    louder = write(client, "alice", "My dog is called Rex", importance=0.9)
    assert louder["results"][0]["event"] == "MERGE" and louder["results"][0]["reason"] == "identical"
    assert louder["seq"] > first["seq"]
    assert client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).json()["importance"] == 0.9
    assert write(client, "alice", "My dog is called Rex", importance=0.3)["results"][0]["event"] == "NOOP"


def test_a_paraphrase_merges_into_its_target(client: TestClient) -> None:
    first = write(client, "alice", "I drink coffee every morning", importance=0.8, metadata={"a": 1})
    merged = write(client, "alice", "Every morning I drink coffee.", metadata={"b": 2})
    memory_id = first["ids"][0]
    assert merged["results"] == [{"id": memory_id, "event": "MERGE", "reason": "paraphrase", "merged_into": memory_id}]
    memory = client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).json()
    assert memory["text"] == "Every morning I drink coffee." and memory["importance"] == 0.8
    assert memory["metadata"] == {"a": 1, "b": 2}
    history = client.get(f"/v1/memories/{memory_id}/history", params={"user": "alice"}).json()["history"]
    assert [(h["event"], h["old_text"]) for h in history] == [("ADD", None), ("MERGE", "I drink coffee every morning")]


def test_a_batch_reports_every_item(client: TestClient) -> None:
    existing = write(client, "alice", "I drink coffee every morning")["ids"][0]
    batch = write(client, "alice", "I drink coffee every morning!", "Every morning I drink coffee",
                  "likes jazz", "Likes jazz.", "record number 1", "record number 2", "I drink coffee every evening")
    results = [(r["event"], r["reason"], r["merged_into"]) for r in batch["results"]]
    assert results == [("NOOP", "identical", None), ("MERGE", "paraphrase", existing), ("ADD", "new", None),
                       ("NOOP", "identical", None), ("ADD", "new", None), ("ADD", "number", None),
                       ("ADD", "new", None)]
    ids = batch["ids"]
    assert ids[0] == ids[1] == existing and ids[2] == ids[3] and len({existing, ids[2], *ids[4:]}) == 5
    assert sorted(listed(client, "alice")) == sorted([
        "Every morning I drink coffee", "likes jazz", "record number 1", "record number 2",
        "I drink coffee every evening"])


async def test_a_merge_target_deleted_meanwhile_is_added(memory: MemoryService, graph: FakeGraph) -> None:
    """The reviewer's race: the memory `near` returned is deleted before the MERGE commits.
    The update skips it; the item must be added, not answered with the dead id."""
    (first,) = (await memory.add("alice", [MemoryIn(text="my favourite colour is blue")])).ids
    (repeat,) = (await memory.add("alice", [MemoryIn(text="I play chess on Sunday")])).ids
    real_near = memory.retriever.near

    async def near_then_delete(user: str, vectors: np.ndarray, texts: list[str], k: int,
                               min_similarity: float) -> list[list[NearMemory]]:
        candidates = await real_near(user, vectors, texts, k, min_similarity)
        graph.store.delete(user, memory.shard(user), [m.record.id for c in candidates for m in c])
        return candidates

    memory.retriever.near = near_then_delete  # type: ignore[method-assign]
    merged = await memory.add("alice", [MemoryIn(text="Blue is my favourite colour")])  # would MERGE
    noop = await memory.add("alice", [MemoryIn(text="I play chess on Sunday.")])  # would be a NOOP
    for result, dead in ((merged, first), (noop, repeat)):
        (outcome,) = result.outcomes
        assert (outcome.event, outcome.reason, outcome.merged_into) == ("ADD", "target_gone", None)
        assert outcome.id != dead and await memory.get("alice", dead) is None
    assert sorted(r.text for r in graph.store.all_records("alice")) == [
        "Blue is my favourite colour", "I play chess on Sunday"]
