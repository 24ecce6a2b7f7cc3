"""Extraction (`memory.extraction: llm`): prompts, schemas and parsing, and the decisions
applied through the memory API, with a scripted LLM (`FakeLLM.json_answers`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.core.extraction import (
    Candidate,
    ExtractionError,
    decision_messages,
    decision_schema,
    facts_messages,
    facts_schema,
    parse_decision,
    parse_facts,
)
from serve_app.settings import AppSettings
from tests.fakes import FakeGraph
from tests.unit.conftest import app_over

CHAT = [{"role": "user", "content": "I drink coffee every morning."},
        {"role": "assistant", "content": "Noted!"}]


def facts(*texts: str) -> str:
    return json.dumps({"facts": list(texts)})


def decision(event: str, label: str = "none", text: str = "") -> str:
    return json.dumps({"event": event, "id": label, "text": text})


def write(client: TestClient, user: str = "alice", **extra: Any) -> dict[str, Any]:
    body = {"user": user, "messages": CHAT, "extraction": "llm", **extra}
    response = client.post("/v1/memories", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def history(client: TestClient, memory_id: str, user: str = "alice") -> list[dict[str, Any]]:
    response = client.get(f"/v1/memories/{memory_id}/history", params={"user": user})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["history"]
    return entries


# ---------------------------------------------------------------- pure


def test_schemas_bound_the_facts_and_confine_ids_to_the_offered_labels() -> None:
    assert facts_schema(3)["properties"]["facts"]["maxItems"] == 3
    assert decision_schema(2)["properties"]["id"]["enum"] == ["none", "1", "2"]
    assert decision_schema(0)["properties"]["id"]["enum"] == ["none"]


def test_prompts_carry_the_turns_and_the_candidates() -> None:
    asked = facts_messages(["user: I live in Oslo.", "  ", "assistant: Nice."])
    assert "user: I live in Oslo.\nassistant: Nice." in asked[-1]["content"]
    shown = decision_messages("The user lives in Oslo.", [Candidate("m1", "The user lives in Rome.")])[-1]["content"]
    assert '1. "The user lives in Rome."' in shown and "m1" not in shown


def test_facts_are_parsed_cleaned_and_capped() -> None:
    assert parse_facts(facts(" The user  likes tea. ", "", "The user likes tea.", "The user has a cat."), 5) == [
        "The user likes tea.", "The user has a cat."]
    assert parse_facts(facts("a fact here", "another fact", "third fact"), 2) == ["a fact here", "another fact"]
    for bad in ('{"facts": ["cut', '{"facts": "one"}', '{"facts": [], "extra": 1}', "[]"):
        with pytest.raises(ExtractionError):
            parse_facts(bad, 5)


def test_decisions_refuse_ids_that_were_not_offered() -> None:
    offered = [Candidate("mem-a", "The user likes coffee."), Candidate("mem-b", "The user lives in Oslo.")]
    chosen = parse_decision(decision("UPDATE", "2", "The user lives in Bergen."), "fact", offered)
    assert (chosen.event, chosen.target, chosen.text) == ("UPDATE", offered[1], "The user lives in Bergen.")
    assert parse_decision(decision("ADD", "1", "reworded"), "the fact", offered).target is None
    assert parse_decision(decision("ADD", "1", "reworded"), "the fact", offered).text == "the fact"
    for bad in (decision("DELETE", "3"), decision("UPDATE", "mem-a"), decision("NOOP", "0"), decision("DELETE"),
                decision("MERGE", "1"), "not json"):
        with pytest.raises(ExtractionError):
            parse_decision(bad, "fact", offered)


# ---------------------------------------------------------------- through the API


def test_a_fact_with_nothing_near_is_added_and_the_turns_are_kept(client: TestClient, graph: FakeGraph) -> None:
    graph.llm.json_answers = [facts("The user drinks coffee every morning.")]
    result = write(client)
    assert len(result["ids"]) == 2 and [r["event"] for r in result["results"]] == ["ADD", "ADD"]  # the turns
    report = result["extraction"]
    assert report["status"] == "done" and report["error"] is None
    (fact,) = report["facts"]
    assert fact["event"] == "ADD" and fact["text"] == "The user drinks coffee every morning."
    stored = client.get(f"/v1/memories/{fact['id']}", params={"user": "alice"}).json()
    assert stored["text"] == fact["text"] and stored["metadata"] == {"extracted": True}
    assert [(h["event"], h["actor"]) for h in history(client, fact["id"])] == [("ADD", "extraction")]
    assert len(graph.llm.json_requests) == 1  # no candidate: no decision asked
    assert graph.llm.json_requests[0].temperature == 0.0
    assert graph.llm.json_requests[0].json_schema == facts_schema(AppSettings().memory.extraction_max_facts)
    assert result["seq"] == history(client, fact["id"])[0]["seq"]  # the seq to read at covers the fact


def test_update_rewrites_the_nearest_fact_and_keeps_its_history(client: TestClient, graph: FakeGraph) -> None:
    graph.llm.json_answers = [facts("The user prefers coffee.")]
    first = write(client)["extraction"]["facts"][0]
    graph.llm.json_answers = [facts("The user now prefers tea."), decision("UPDATE", "1", "The user prefers tea.")]
    (fact,) = write(client)["extraction"]["facts"]
    assert fact == {"text": "The user prefers tea.", "event": "UPDATE", "id": first["id"],
                    "previous": "The user prefers coffee."}
    assert graph.llm.json_requests[-1].json_schema == decision_schema(1)
    assert "The user prefers coffee." in graph.llm.json_requests[-1].messages[-1]["content"]  # type: ignore[index]
    stored = client.get(f"/v1/memories/{first['id']}", params={"user": "alice"}).json()
    assert stored["text"] == "The user prefers tea."
    assert [(h["event"], h["actor"], h["old_text"], h["new_text"]) for h in history(client, first["id"])] == [
        ("ADD", "extraction", None, "The user prefers coffee."),
        ("UPDATE", "extraction", "The user prefers coffee.", "The user prefers tea.")]


def test_delete_removes_the_contradicted_fact(client: TestClient, graph: FakeGraph) -> None:
    graph.llm.json_answers = [facts("The user owns a red car.")]
    first = write(client)["extraction"]["facts"][0]
    graph.llm.json_answers = [facts("The user sold the red car."), decision("DELETE", "1")]
    (fact,) = write(client)["extraction"]["facts"]
    assert (fact["event"], fact["id"], fact["previous"]) == ("DELETE", first["id"], "The user owns a red car.")
    assert client.get(f"/v1/memories/{first['id']}", params={"user": "alice"}).status_code == 404
    assert history(client, first["id"])[-1]["event"] == "DELETE"
    assert history(client, first["id"])[-1]["actor"] == "extraction"


def test_noop_writes_nothing(client: TestClient, graph: FakeGraph) -> None:
    graph.llm.json_answers = [facts("The user has a cat named Tom.")]
    first = write(client)["extraction"]["facts"][0]
    before = client.get("/v1/memories", params={"user": "alice"}).json()["data"]
    graph.llm.json_answers = [facts("The user's cat is named Tom."), decision("NOOP", "1")]
    result = write(client, messages=[{"role": "user", "content": "My cat Tom says hi."}])
    assert result["extraction"]["facts"] == [{"text": "The user's cat is named Tom.", "event": "NOOP",
                                              "id": first["id"], "previous": "The user has a cat named Tom."}]
    after = client.get("/v1/memories", params={"user": "alice"}).json()["data"]
    assert len(after) == len(before) + 1  # the one new turn, no fact
    assert [h["event"] for h in history(client, first["id"])] == ["ADD"]


def test_an_id_not_offered_is_refused_and_nothing_is_touched(client: TestClient, graph: FakeGraph) -> None:
    graph.llm.json_answers = [facts("The user lives in Oslo.")]
    first = write(client)["extraction"]["facts"][0]
    graph.llm.json_answers = [facts("The user lives in Bergen."), decision("DELETE", "4")]
    result = write(client)
    assert result["extraction"]["status"] == "failed" and "not offered" in result["extraction"]["error"]
    assert len(result["ids"]) == 2  # the turns are stored regardless
    assert client.get(f"/v1/memories/{first['id']}", params={"user": "alice"}).json()["text"] == first["text"]


def test_only_extracted_facts_are_offered(client: TestClient, graph: FakeGraph) -> None:
    """The user's own memories (and the turns) are never a model's to rewrite or delete."""
    own = client.post("/v1/memories", json={"user": "alice", "text": "The user prefers coffee."}).json()["ids"][0]
    graph.llm.json_answers = [facts("The user prefers tea.")]
    (fact,) = write(client)["extraction"]["facts"]
    assert fact["event"] == "ADD" and fact["id"] != own
    assert len(graph.llm.json_requests) == 1  # nothing to decide against
    assert client.get(f"/v1/memories/{own}", params={"user": "alice"}).json()["text"] == "The user prefers coffee."


@pytest.mark.parametrize("failure", [RuntimeError("engine died"), '{"facts": ["The user li', '{"fax": []}'])
def test_a_failing_llm_falls_back_to_the_plain_write(client: TestClient, graph: FakeGraph, failure: Any) -> None:
    graph.llm.json_answers = [failure]
    result = write(client)
    assert result["extraction"]["status"] == "failed" and result["extraction"]["facts"] == []
    assert result["extraction"]["error"]
    for memory_id in result["ids"]:
        assert client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).status_code == 200


def test_a_slow_llm_times_out_into_the_plain_write(settings: AppSettings, graph: FakeGraph) -> None:
    settings.memory.extraction_timeout_s = 0.05
    graph.llm.delay_s = 1.0
    graph.llm.json_answers = [facts("The user drinks coffee.")]
    with app_over(settings, graph) as client:
        result = write(client)
    assert result["extraction"]["status"] == "failed" and "did not answer" in result["extraction"]["error"]
    assert len(result["ids"]) == 2


def test_the_server_setting_turns_it_on_and_a_request_may_turn_it_off(settings: AppSettings,
                                                                       graph: FakeGraph) -> None:
    settings.memory.extraction = "llm"
    graph.llm.json_answers = [facts("The user drinks coffee every morning.")]
    with app_over(settings, graph) as client:
        on = client.post("/v1/memories", json={"user": "bob", "messages": CHAT}).json()
        off = client.post("/v1/memories", json={"user": "carl", "messages": CHAT, "extraction": "off"}).json()
        text = client.post("/v1/memories", json={"user": "dan", "text": "I drink coffee."}).json()
    assert on["extraction"]["facts"][0]["event"] == "ADD"
    assert off["extraction"] is None and text["extraction"] is None  # only `messages` writes are extracted
    assert len(graph.llm.json_requests) == 1


def test_extraction_is_off_by_default(client: TestClient, graph: FakeGraph) -> None:
    graph.llm.json_answers = [facts("The user drinks coffee every morning.")]
    assert client.post("/v1/memories", json={"user": "eve", "messages": CHAT}).json()["extraction"] is None
    assert graph.llm.json_requests == []


@pytest.mark.parametrize("source", [{"text": "I prefer tea"}, {"memories": [{"text": "I prefer tea"}]}])
def test_extraction_on_a_write_without_messages_is_a_400(client: TestClient, source: dict[str, Any]) -> None:
    """Only a conversation is extracted from: asking for it on `text` or `memories` is
    refused by name, never silently ignored, and nothing is written."""
    response = client.post("/v1/memories", json={"user": "alice", "extraction": "llm", **source})
    assert response.status_code == 400
    assert "extraction applies to the messages form only" in response.json()["error"]["message"]
    assert client.get("/v1/memories", params={"user": "alice"}).json()["data"] == []
