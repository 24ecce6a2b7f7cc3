"""Memories never push a short question out of the model's context: the LLM side trims
them to the window and the response says what was left out (the fake LLM's window is in
words; tests/unit/test_prompt.py runs the same budget with the real tokenizer)."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.fakes import FakeGraph

MODEL = "smollm2-135m-instruct"
QUESTION = "What do you know about my garden?"


def fill(client: TestClient, n: int) -> None:
    items = [{"text": f"Garden note {i}: " + "tomatoes and roses grow along the garden wall " * 4}
             for i in range(n)]
    assert client.post("/v1/memories", json={"user": "alice", "memories": items, "dedup": False}).status_code == 200


def chat(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "user": "alice", "max_tokens": 16, "messages": [{"role": "user", "content": QUESTION}],
            "memserve": {"k": 12, "cache": False, "write_back": False}, **extra}


def test_memories_are_trimmed_to_the_window_and_reported(client: TestClient, graph: FakeGraph) -> None:
    fill(client, 12)
    graph.llm.context_words = 200
    answer = client.post("/v1/chat/completions", json=chat())
    assert answer.status_code == 200, answer.text
    info = answer.json()["memserve"]
    assert info["trimmed"]["memories"] > 0 and info["trimmed"]["knowledge"] == 0
    assert len(info["memories"]) + info["trimmed"]["memories"] == 12
    prompt = graph.llm.last_prompt
    assert len(prompt.split()) <= 200 - 16 and prompt.endswith(QUESTION)
    assert all(m["text"] in prompt for m in info["memories"])  # what the response lists is what the prompt held


def test_streams_report_the_trim_too_and_a_roomy_window_trims_nothing(client: TestClient, graph: FakeGraph) -> None:
    fill(client, 12)
    graph.llm.context_words = 200
    with client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: {") and '"memserve"' in line]
    assert events and events[-1]["memserve"]["trimmed"]["memories"] > 0
    graph.llm.context_words = 100_000
    roomy = client.post("/v1/chat/completions", json=chat()).json()["memserve"]
    assert "trimmed" not in roomy or roomy["trimmed"] is None
    assert len(roomy["memories"]) == 12
