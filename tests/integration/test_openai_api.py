"""The official `openai` client against the live graph (real vLLM, MiniLM, FAISS)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import httpx
import numpy as np
import openai
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
EMBEDDER = "all-MiniLM-L6-v2"


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {MODEL, EMBEDDER}


def test_chat_completion_answers_with_real_token_counts(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32, temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 10 and 0 < reply.usage.completion_tokens <= 32


def remembered(http: httpx.Client, user: str) -> list[object]:
    data: list[object] = http.get("/v1/memories", params={"user": user}).json()["data"]
    return data


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_streamed_chat_arrives_token_by_token(client: openai.OpenAI, http: httpx.Client) -> None:
    """Streaming, not a buffered body: when the first token reaches the client, the server
    has not finished the request. (Not a wall-clock gap between chunks: on a busy machine a
    descheduled client reads a whole stream in one go, and that says nothing about the server.)
    The server's "finished" is observed in the store, which every replica shares: the turn
    is written back to the user's memories only after the last token."""
    user = f"streamer-{uuid.uuid4().hex[:8]}"
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a brave knight and a dragon."}],
        max_tokens=128, temperature=0, stream=True, stream_options={"include_usage": True}, user=user,
        extra_body={"memserve": {"cache": False, "write_back": True}},
    )
    pieces: list[str] = []
    remembered_at_first_token: list[object] | None = None
    usage = None
    finish = None
    served: dict[str, object] = {}
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        served = (chunk.model_extra or {}).get("memserve") or served
        for choice in chunk.choices:
            if choice.delta.content:
                if remembered_at_first_token is None:
                    remembered_at_first_token = remembered(http, user)
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert remembered_at_first_token == [], served
    assert wait_until(lambda: remembered(http, user) != [], 60), "the turn was never written back"
    assert len(pieces) >= 10 and not served["cached"]
    assert finish in ("stop", "length") and usage is not None
    assert len(pieces) <= usage.completion_tokens <= 128


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.completion_tokens <= 8


def test_embeddings_are_normalized_minilm_vectors(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=EMBEDDER, input=["a happy dog", "a joyful puppy", "tax law"])
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert result.usage.prompt_tokens > 0


def test_bad_requests_raise_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100_000)
    assert "context" in str(too_long.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"memserve": {"k": 1000}}
        )


def test_memory_round_trip_is_private(client: openai.OpenAI, http) -> None:  # type: ignore[no-untyped-def]
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    fact = "My sister Ingrid lives in Reykjavik and works as a marine biologist."
    added = http.post("/v1/memories", json={"user": alice, "text": fact, "importance": 0.9}).json()
    assert added["seq"] > 0

    def ask(user: str) -> dict:  # type: ignore[type-arg]
        reply = client.chat.completions.create(
            model=MODEL, user=user, max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": "Where does my sister Ingrid live?"}],
            extra_body={"memserve": {"k": 3, "write_back": False}},
        )
        return reply.model_extra["memserve"]  # type: ignore[index]

    mine = ask(alice)
    assert fact in [m["text"] for m in mine["memories"]]
    assert mine["degraded"] == [] and mine["timings_ms"]["ttft"] > 0
    theirs = ask(bob)
    assert all(m["text"] != fact for m in theirs["memories"])

    # The same fact through the memory API: found for alice, invisible to bob.
    found = http.post("/v1/memories/search", json={"user": alice, "query": "Ingrid's job", "min_seq": added["seq"]})
    assert found.json()["results"][0]["text"] == fact
    assert http.post("/v1/memories/search", json={"user": bob, "query": "Ingrid's job"}).json()["results"] == []
    listed = http.get("/v1/memories", params={"user": bob}).json()["data"]
    assert fact not in [m["text"] for m in listed]


def test_chat_turn_is_written_back(client: openai.OpenAI, http) -> None:  # type: ignore[no-untyped-def]
    user = f"carol-{uuid.uuid4().hex[:8]}"
    client.chat.completions.create(
        model=MODEL, user=user, max_tokens=8, messages=[{"role": "user", "content": "I am allergic to peanuts."}]
    )
    deadline = time.monotonic() + 60  # write-back is asynchronous
    texts: list[str] = []
    while time.monotonic() < deadline and "I am allergic to peanuts." not in texts:
        texts = [m["text"] for m in http.get("/v1/memories", params={"user": user}).json()["data"]]
        time.sleep(0.2)
    assert "I am allergic to peanuts." in texts


def test_deleted_memory_is_not_used(http) -> None:  # type: ignore[no-untyped-def]
    user = f"dave-{uuid.uuid4().hex[:8]}"
    added = http.post("/v1/memories", json={"user": user, "text": "My locker code is 4312."}).json()
    deleted = http.delete(f"/v1/memories/{added['ids'][0]}", params={"user": "someone-else"})
    assert deleted.status_code == 404 and deleted.json()["error"]["code"] == "memory_not_found"
    ok = http.delete(f"/v1/memories/{added['ids'][0]}", params={"user": user}).json()
    assert ok["seq"] > added["seq"]
    found = http.post("/v1/memories/search", json={"user": user, "query": "locker code", "min_seq": ok["seq"]})
    assert found.json()["results"] == []


def test_http_level_bad_input(http) -> None:  # type: ignore[no-untyped-def]
    big = http.post("/v1/memories", content=b'{"user":"a","text":"' + b"x" * 3_000_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    bad_k = http.post("/v1/memories/search", json={"user": "a", "query": "x", "k": 0})
    assert bad_k.status_code == 400 and bad_k.json()["error"]["param"] == "k"
    wrong_type = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": 5}]})
    assert wrong_type.status_code == 400
    broken = http.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400
    # The replicas survived all of it.
    assert http.get("/health").status_code == 200


def test_concurrent_streams_all_complete(server: str) -> None:
    import asyncio

    async def one(i: int) -> str:
        aclient = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Give me fact number {i} about owls."}],
            max_tokens=16, stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await aclient.close()
        return text

    async def many() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    texts = asyncio.run(many())
    assert len(texts) == 8 and all(t.strip() for t in texts)
