"""HTTP contract over fake services: shapes, errors in OpenAI's format, isolation."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

MODEL = "smollm2-135m-instruct"


def chat_body(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


def assert_openai_error(response, status: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (chat_body(messages=[]), "messages"),
        (chat_body(messages=[{"role": "user", "content": "   "}]), None),
        (chat_body(messages=[{"role": "wizard", "content": "hi"}]), "messages.0.role"),
        (chat_body(messages="hello"), "messages"),
        (chat_body(temperature="hot"), "temperature"),
        (chat_body(temperature=5), "temperature"),
        (chat_body(max_tokens=0), "max_tokens"),
        (chat_body(n=9), "n"),
        (chat_body(n=0), "n"),
        (chat_body(memserve={"k": 0}), "memserve.k"),
        (chat_body(memserve={"k": 500}), "memserve.k"),
        (chat_body(user=""), "user"),
        (chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    ],
)
def test_bad_chat_requests_get_400(client: TestClient, body: dict[str, object], param: str | None) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_invalid_json_and_unknown_model(client: TestClient) -> None:
    bad = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert "JSON" in assert_openai_error(bad, 400)["message"]
    unknown = client.post("/v1/chat/completions", json=chat_body(model="gpt-9"))
    assert assert_openai_error(unknown, 404)["code"] == "model_not_found"
    embed = client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert_openai_error(embed, 404)


def test_oversize_body_is_413(client: TestClient) -> None:
    big = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * 20_000}]))
    response = client.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert assert_openai_error(response, 413)["code"] == "body_too_large"


def test_chunked_oversize_body_is_413(client: TestClient) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"user": "a", "text": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}'

    response = client.post("/v1/memories", content=chunks(), headers={"content-type": "application/json"})
    assert_openai_error(response, 413)


def test_prompt_too_long_is_400(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(max_tokens=5000))
    assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"
    streamed = client.post("/v1/chat/completions", json=chat_body(max_tokens=5000, stream=True))
    assert_openai_error(streamed, 400)


def test_chat_response_shape(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json=chat_body()).json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert "timings_ms" in body["memserve"]


def test_stream_is_sse_ending_with_done(client: TestClient) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and "memserve" in events[-2]
    assert events[-1]["usage"]["completion_tokens"] >= 1


def test_completion_and_embeddings(client: TestClient) -> None:
    completion = client.post("/v1/completions", json={"model": MODEL, "prompt": "Once upon"}).json()
    assert completion["object"] == "text_completion" and completion["choices"][0]["text"]
    assert_openai_error(client.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b"]}), 400)
    emb = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["a b", "c"]}).json()
    assert [d["index"] for d in emb["data"]] == [0, 1] and len(emb["data"][0]["embedding"]) == 64
    b64 = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "a", "encoding_format": "base64"})
    assert isinstance(b64.json()["data"][0]["embedding"], str)
    assert_openai_error(client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [""]}), 400)


def test_memory_crud_and_isolation(client: TestClient) -> None:
    memories = [{"text": "likes green tea"}, {"text": "lives in Oslo", "tier": "semantic"}]
    added = client.post("/v1/memories", json={"user": "alice", "memories": memories}).json()
    assert len(added["ids"]) == 2 and added["seq"] > 0
    hits = client.post("/v1/memories/search",
                       json={"user": "alice", "query": "green tea", "k": 1, "min_seq": added["seq"]}).json()
    assert [h["text"] for h in hits["results"]] == ["likes green tea"]
    assert client.post("/v1/memories/search", json={"user": "bob", "query": "green tea"}).json()["results"] == []
    listed = client.get("/v1/memories", params={"user": "alice", "limit": 1}).json()
    assert len(listed["data"]) == 1 and listed["next_cursor"]
    rest = client.get("/v1/memories", params={"user": "alice", "cursor": listed["next_cursor"]}).json()
    assert [m["text"] for m in rest["data"]] == ["lives in Oslo"] and rest["next_cursor"] is None
    memory_id = added["ids"][0]
    assert client.get(f"/v1/memories/{memory_id}", params={"user": "bob"}).status_code == 404
    assert client.delete(f"/v1/memories/{memory_id}", params={"user": "bob"}).status_code == 404
    assert client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).json()["text"] == "likes green tea"
    assert client.delete(f"/v1/memories/{memory_id}", params={"user": "alice"}).json()["deleted"] is True
    assert client.get(f"/v1/memories/{memory_id}", params={"user": "alice"}).status_code == 404
    gone = client.post("/v1/memories/search", json={"user": "alice", "query": "green tea", "k": 5}).json()
    assert "likes green tea" not in [h["text"] for h in gone["results"]]


@pytest.mark.parametrize(
    "body",
    [
        {"text": "no user"},
        {"user": "a"},
        {"user": "a", "text": "x", "memories": [{"text": "y"}]},
        {"user": "a", "text": ""},
        {"user": "a", "text": "x", "tier": "forever"},
        {"user": "a", "text": "x", "importance": 2},
        {"user": "a", "memories": []},
    ],
)
def test_bad_memory_writes_get_400(client: TestClient, body: dict[str, object]) -> None:
    assert_openai_error(client.post("/v1/memories", json=body), 400)


def test_bad_memory_queries_get_400(client: TestClient) -> None:
    assert_openai_error(client.post("/v1/memories/search", json={"user": "a", "query": "x", "k": 51}), 400)
    assert_openai_error(client.get("/v1/memories", params={"user": "a", "tier": "nope"}), 400)
    assert_openai_error(client.get("/v1/memories", params={"user": "a", "cursor": "abc"}), 400)
    assert_openai_error(client.get("/v1/memories"), 400)
