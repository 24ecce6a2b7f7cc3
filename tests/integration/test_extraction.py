"""Extraction on the real engine: the bundled SmolLM2-135M answers under vLLM structured
outputs, and whatever it decides is applied to the store with history.

The session's app (`server`) runs with `memory.extraction: off`, as shipped; these writes
turn it on per request (`"extraction": "llm"`), so no second app is started. What is
asserted is the mechanism (valid JSON, decisions applied, history written, the turns kept),
not the small model's judgement, which `benchmarks/eval_extraction.py` measures.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from serve_app.core.extraction import MAX_FACT_CHARS

pytestmark = pytest.mark.integration

FIRST = [{"role": "user", "content": "Hi! My name is Alice and I live in Berlin."},
         {"role": "assistant", "content": "Nice to meet you, Alice!"},
         {"role": "user", "content": "I prefer coffee over tea, and my dog is called Biscuit."}]
SECOND = [{"role": "user", "content": "These days I prefer tea, not coffee. And I moved from Berlin to Munich."}]


def extract(http: httpx.Client, user: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    response = http.post("/v1/memories", json={"user": user, "messages": messages, "extraction": "llm"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    report = body["extraction"]
    # valid JSON under the schema: a failure would be reported, with the reason
    assert report is not None and report["status"] == "done", report
    assert len(body["ids"]) == len(messages)  # the turns are stored as well
    for memory_id in body["ids"]:
        assert http.get(f"/v1/memories/{memory_id}", params={"user": user}).status_code == 200
    return body


def check_applied(http: httpx.Client, user: str, fact: dict[str, Any]) -> None:
    """The store shows what the report says was done about `fact`, and the memory's
    history names extraction as the actor."""
    got = http.get(f"/v1/memories/{fact['id']}", params={"user": user})
    history = http.get(f"/v1/memories/{fact['id']}/history", params={"user": user}).json()["history"]
    last = history[-1]
    if fact["event"] == "DELETE":
        assert got.status_code == 404
        assert (last["event"], last["actor"], last["old_text"]) == ("DELETE", "extraction", fact["previous"])
        return
    assert got.status_code == 200
    memory = got.json()
    assert memory["metadata"].get("extracted") is True
    assert history[0]["actor"] == "extraction"
    if fact["event"] == "ADD":
        assert memory["text"] == fact["text"] and [h["event"] for h in history] == ["ADD"]
    elif fact["event"] == "UPDATE":
        assert memory["text"] == fact["text"]
        assert last["event"] in ("UPDATE", "MERGE") and last["actor"] == "extraction"
        assert last["new_text"] == fact["text"]
    else:  # NOOP: an extracted fact already said it (the one decided against, or word for word)
        assert fact["event"] == "NOOP"
        assert memory["text"] == (fact["text"] if fact["previous"] is None else fact["previous"])


def check_report(http: httpx.Client, user: str, facts: list[dict[str, Any]]) -> None:
    """Each memory the report names, as its last fact about it left it (a later fact of
    the same write may act on a fact an earlier one added)."""
    last = {f["id"]: f for f in facts}
    for fact in last.values():
        check_applied(http, user, fact)


def test_extraction_on_the_real_engine(http: httpx.Client) -> None:
    user = f"extract-{uuid.uuid4().hex[:8]}"
    first = extract(http, user, FIRST)
    facts = first["extraction"]["facts"]
    assert facts, "the model extracted no fact from an explicit conversation"
    assert all(f["event"] == "ADD" for f in facts[:1])  # the user had no extracted fact yet
    assert all(f["text"].strip() and len(f["text"]) <= MAX_FACT_CHARS for f in facts)
    check_report(http, user, facts)
    # The write's seq covers the facts: a search at it finds the first one.
    found = http.post("/v1/memories/search", json={"user": user, "query": facts[0]["text"], "k": 10,
                                                    "min_seq": first["seq"]}).json()["results"]
    assert facts[0]["id"] in {r["id"] for r in found}

    second = extract(http, user, SECOND)
    check_report(http, user, second["extraction"]["facts"])
    listed = http.get("/v1/memories", params={"user": user, "limit": 1000}).json()["data"]
    extracted = {m["id"] for m in listed if m["metadata"].get("extracted") is True}
    expected: set[str] = set()
    for fact in facts + second["extraction"]["facts"]:  # in the order they were applied
        (expected.discard if fact["event"] == "DELETE" else expected.add)(fact["id"])
    assert extracted == expected  # nothing extracted beyond what the reports say
