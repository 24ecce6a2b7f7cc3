"""Memory that forms, through the API over the in-process graph: event times on every read
and in filters, conversation turns indexed with their context, connections (never across
users), and questions that name a time."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi.testclient import TestClient

from serve_app.settings import AppSettings
from tests.fakes import FakeGraph

Json = dict[str, Any]
MAY_8_2023 = 1683554160.0  # 2023-05-08T13:56:00Z, a Monday
DAY = 86400.0


def post(client: TestClient, body: Json) -> Json:
    response = client.post("/v1/memories", json=body)
    assert response.status_code == 200, response.text
    result: Json = response.json()
    return result


def search(client: TestClient, user: str, query: str, **extra: object) -> list[Json]:
    response = client.post("/v1/memories/search", json={"user": user, "query": query, **extra})
    assert response.status_code == 200, response.text
    results: list[Json] = response.json()["results"]
    return results


def error_param(response: Any) -> str:
    assert response.status_code == 400, response.text
    param: str = response.json()["error"]["param"]
    return param


def test_occurred_at_round_trips_through_every_read(client: TestClient) -> None:
    before = time.time()
    written = post(client, {"user": "alice", "memories": [
        {"text": "Caroline went to a support group", "occurred_at": "2023-05-08T13:56:00Z"},
        {"text": "Caroline paints sunsets", "occurred_at": MAY_8_2023 - DAY},
        {"text": "Caroline likes tea"}]})
    ids = written["ids"]
    one = client.get(f"/v1/memories/{ids[0]}", params={"user": "alice"}).json()
    assert one["occurred_at"] == MAY_8_2023 and one["created_at"] >= before
    listed = client.get("/v1/memories", params={"user": "alice"}).json()["data"]
    assert [m["occurred_at"] for m in listed[:2]] == [MAY_8_2023, MAY_8_2023 - DAY]
    assert listed[2]["occurred_at"] == listed[2]["created_at"]  # default: when it was written
    [found] = search(client, "alice", "support group", k=1)
    assert found["id"] == ids[0] and found["occurred_at"] == MAY_8_2023
    patched = client.patch(f"/v1/memories/{ids[2]}", json={"user": "alice", "occurred_at": "2020-01-01"}).json()
    assert patched["memory"]["occurred_at"] == 1577836800.0 and patched["memory"]["text"] == "Caroline likes tea"
    history = client.get(f"/v1/memories/{ids[2]}/history", params={"user": "alice"}).json()["history"]
    assert [h["occurred_at"] for h in history] == [listed[2]["occurred_at"], 1577836800.0]


def test_bad_event_times_are_400_naming_the_field(client: TestClient) -> None:
    cases = [
        ("post", "/v1/memories", {"user": "a", "memories": [{"text": "x", "occurred_at": "last Tuesday"}]},
         "memories.0.occurred_at"),
        ("post", "/v1/memories", {"user": "a", "text": "x", "occurred_at": 1.7e12}, "occurred_at"),  # milliseconds
        ("post", "/v1/memories", {"user": "a", "text": "x", "occurred_at": "9999-01-01"}, "occurred_at"),
        ("post", "/v1/memories", {"user": "a", "text": "x", "occurred_at": True}, "occurred_at"),
        ("post", "/v1/memories/search", {"user": "a", "query": "x", "filters": {"occurred_after": "soon"}},
         "filters.occurred_after"),
        ("patch", "/v1/memories/mem-x", {"user": "a", "occurred_at": "2023-02-30"}, "occurred_at"),
    ]
    for method, path, body, param in cases:
        response = client.request(method.upper(), path, json=body)
        assert error_param(response) == param, body
        assert "occurred" in response.json()["error"]["message"] or "ISO 8601" in response.json()["error"]["message"]
    assert client.get("/v1/memories", params={"user": "a"}).json()["data"] == []


def test_search_filters_on_event_time(client: TestClient) -> None:
    post(client, {"user": "alice", "memories": [
        {"text": "dinner at Nopa", "occurred_at": "2023-05-08"},
        {"text": "dinner at Zuni", "occurred_at": "2023-07-01"},
        {"text": "dinner at home"}]})
    may_june = search(client, "alice", "dinner", filters={"occurred_after": "2023-05-01",
                                                          "occurred_before": "2023-06-30T23:59:59Z"})
    assert [r["text"] for r in may_june] == ["dinner at Nopa"]
    before_now = search(client, "alice", "dinner", filters={"occurred_before": MAY_8_2023 + 90 * DAY})
    assert sorted(r["text"] for r in before_now) == ["dinner at Nopa", "dinner at Zuni"]
    assert [r["text"] for r in search(client, "alice", "dinner", filters={"occurred_after": time.time() - 60})] == [
        "dinner at home"]


def test_recency_decay_of_episodic_memories_uses_the_event_time(client: TestClient) -> None:
    # Written last, so newest by created_at; it happened 60 days ago, so it ranks below.
    post(client, {"user": "alice", "memories": [{"text": "went hiking at Tam", "tier": "episodic"}]})
    post(client, {"user": "alice", "memories": [
        {"text": "went hiking at Diablo", "tier": "episodic", "occurred_at": time.time() - 60 * DAY}]})
    fresh, old = search(client, "alice", "went hiking", k=2)
    assert (fresh["text"], old["text"]) == ("went hiking at Tam", "went hiking at Diablo")
    assert old["created_at"] > fresh["created_at"]
    assert old["score"] < fresh["score"] * math.exp(-0.05 * 59)  # exp(-0.05 x 60 days), give or take RRF ranks


def test_messages_form_indexes_turns_with_their_context(client: TestClient, graph: FakeGraph) -> None:
    written = post(client, {"user": "alice", "session": "s1", "occurred_at": "2023-05-08T13:56:00Z", "messages": [
        {"role": "user", "name": "Caroline", "content": "Did you finally go to the beach?"},
        {"role": "assistant", "name": "Melanie", "content": "Yes, last Tuesday!"},
        {"role": "user", "content": "no name here"}]})
    listed = client.get("/v1/memories", params={"user": "alice"}).json()["data"]
    assert [(m["text"], m["session"], m["occurred_at"]) for m in listed] == [
        ("Caroline: Did you finally go to the beach?", "s1", MAY_8_2023),
        ("Melanie: Yes, last Tuesday!", "s1", MAY_8_2023),
        ("user: no name here", "s1", MAY_8_2023)]
    # The index reads each turn with its day and the turn it answers; the stored text is what was said.
    _, _, indexed = graph.store.user_index_data("alice")
    assert indexed == [
        "[Monday 8 May 2023] Caroline: Did you finally go to the beach?",
        "[Monday 8 May 2023] Melanie: Yes, last Tuesday! (in reply to Caroline: Did you finally go to the beach?)",
        "[Monday 8 May 2023] user: no name here (in reply to Melanie: Yes, last Tuesday!)"]
    # A later write to the same session follows its last stored turn.
    post(client, {"user": "alice", "memories": [{"text": "Caroline: Nice!", "session": "s1"}]})
    assert graph.store.user_index_data("alice")[2][-1].endswith("(in reply to user: no name here)")
    # The reply is found by what it answers ("beach" is only in the turn before it) ...
    found = search(client, "alice", "beach", k=2)
    assert "Melanie: Yes, last Tuesday!" in [r["text"] for r in found]
    # ... and re-indexed with its new date when that changes; its text stays.
    reply = written["ids"][1]
    client.patch(f"/v1/memories/{reply}", json={"user": "alice", "occurred_at": "2023-05-09"})
    assert graph.store.user_index_data("alice")[2][1].startswith("[Tuesday 9 May 2023] Melanie: Yes, last Tuesday!")
    assert client.get(f"/v1/memories/{reply}", params={"user": "alice"}).json()["text"] == "Melanie: Yes, last Tuesday!"


def test_memories_without_a_session_are_indexed_by_their_text(client: TestClient, graph: FakeGraph) -> None:
    post(client, {"user": "alice", "text": "likes tea", "occurred_at": "2023-05-08"})
    assert graph.store.user_index_data("alice")[2] == ["likes tea"]


def conversation(client: TestClient, user: str, session: str, *turns: str) -> list[str]:
    ids: list[str] = post(client, {"user": user, "dedup": False, "memories": [
        {"text": t, "session": session, "occurred_at": "2023-05-08"} for t in turns]})["ids"]
    return ids


def test_search_returns_connected_turns_after_the_top_k(client: TestClient) -> None:
    ids = conversation(client, "alice", "s1", "A: hello there", "B: how are things", "A: my cat Tom is sick",
                       "B: oh no sorry", "A: thanks friend")
    plain = search(client, "alice", "Tom the cat", k=1)
    assert [r["id"] for r in plain] == [ids[2]] and plain[0]["connected_to"] is None
    results = search(client, "alice", "Tom the cat", k=1, include_connections=True)
    assert results[0]["id"] == ids[2] and results[0]["connection"] is None
    assert sorted((r["id"], r["connected_to"], r["connection"]) for r in results[1:]) == sorted([
        (ids[1], ids[2], "session"), (ids[3], ids[2], "session")])
    # At most memory.max_connections of them (3 by default), never a top-k result twice.
    many = search(client, "alice", "A", k=2, include_connections=True)
    assert len(many) <= 5 and len({r["id"] for r in many}) == len(many)


def test_related_memories_of_other_conversations_are_connected(client: TestClient, settings: AppSettings) -> None:
    settings.memory.connection_threshold = 0.5  # the fake embedder's cosine of these two (MiniLM's is higher)
    first = conversation(client, "alice", "s1", "I adopted a puppy named Rex")
    later = conversation(client, "alice", "s2", "Rex the puppy I adopted learned to sit")
    results = search(client, "alice", "learned to sit", k=1, include_connections=True)
    assert results[0]["id"] == later[0]
    assert [(r["id"], r["connected_to"], r["connection"]) for r in results[1:]] == [(first[0], later[0], "related")]


def test_connections_never_cross_users(client: TestClient, settings: AppSettings) -> None:
    settings.memory.connection_threshold = 0.3  # relate generously: Alice's memories are close to Bob's
    alice = conversation(client, "alice", "shared", "I adopted a puppy named Rex", "Rex loves the beach")
    # Bob: the same session id, and a memory as close to Alice's as can be.
    bob = conversation(client, "bob", "shared", "I adopted a puppy named Rex too")
    bob += conversation(client, "bob", "other", "Rex the puppy I adopted loves the beach")
    for query in ("puppy named Rex", "Rex beach", "adopted"):
        results = search(client, "bob", query, k=1, include_connections=True)
        assert {r["id"] for r in results} <= set(bob), results
        assert all(r["connected_to"] in (None, *bob) for r in results)
        assert [r["connection"] for r in results[1:]] == ["related"]  # Bob's own other memory, only
    assert {r["id"] for r in search(client, "alice", "Rex", k=2, include_connections=True)} <= set(alice)


def test_a_question_naming_a_time_prefers_memories_of_that_time(client: TestClient) -> None:
    may = post(client, {"user": "alice", "text": "we went to the lake", "occurred_at": "2023-05-20"})
    aug = post(client, {"user": "alice", "text": "We went to the lake.", "occurred_at": "2024-08-03"})
    # The same words about another day's outing: another memory, not a merge.
    assert aug["results"][0]["event"] == "ADD" and aug["results"][0]["reason"] == "time"
    assert search(client, "alice", "where did we go in May 2023", k=1)[0]["id"] == may["ids"][0]
    assert search(client, "alice", "where did we go in August 2024", k=1)[0]["id"] == aug["ids"][0]
    assert search(client, "alice", "where did we go on 3 August, 2024", k=1)[0]["id"] == aug["ids"][0]


def test_a_question_placed_before_or_after_an_event_finds_that_event_first(client: TestClient) -> None:
    post(client, {"user": "alice", "memories": [
        {"text": "our trip to Rome was amazing", "occurred_at": "2023-03-01"},
        {"text": "we adopted a kitten", "occurred_at": "2023-01-10"},
        {"text": "we adopted a puppy", "occurred_at": "2023-04-02"}]})
    after = [r["text"] for r in search(client, "alice", "what did we adopt after the trip to Rome", k=3)]
    before = [r["text"] for r in search(client, "alice", "what did we adopt before the trip to Rome", k=3)]
    assert after.index("we adopted a puppy") < after.index("we adopted a kitten")
    assert before.index("we adopted a kitten") < before.index("we adopted a puppy")


def test_items_of_one_write_are_related_to_each_other(client: TestClient, settings: AppSettings) -> None:
    settings.memory.connection_threshold = 0.5
    ids = post(client, {"user": "alice", "memories": [
        {"text": "I adopted a puppy named Rex"}, {"text": "cold weather is mild"},
        {"text": "Rex the puppy I adopted learned to sit"}]})["ids"]
    results = search(client, "alice", "learned to sit", k=1, include_connections=True)
    assert [(r["id"], r["connected_to"], r["connection"]) for r in results] == [
        (ids[2], None, None), (ids[0], ids[2], "related")]
    settings.memory.max_connections = 0  # none asked for, none returned (and none recorded from now on)
    assert len(search(client, "alice", "learned to sit", k=1, include_connections=True)) == 1
