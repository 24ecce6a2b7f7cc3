"""Past capacity the app sheds: a stage's backpressure (Ray Serve's max_queued_requests)
becomes `StageUnavailable` at the endpoint and reaches the client as an OpenAI-style 503
with Retry-After, on HTTP and the WebSocket; a store outage is a 503 too, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient
from ray.serve.exceptions import BackPressureError
from redis.exceptions import ConnectionError as RedisConnectionError

from serve_app.clients.endpoint import HandleEndpoint, StageUnavailable
from serve_app.errors import to_error
from serve_app.generation import GenerationChunk, GenerationRequest
from serve_app.settings import AppSettings
from tests.fakes import FakeGraph

MODEL = "smollm2-135m-instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "memserve": {"cache": False}}


@pytest.fixture
def llm_at_capacity(graph: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise StageUnavailable.of(BackPressureError(num_queued_requests=16, max_queued_requests=16, retry_after_s=2.5))
        yield GenerationChunk(text="")  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(graph.llm, "generate", refuse)


@pytest.mark.parametrize("stream", [False, True])
def test_a_shed_generation_is_a_503_with_retry_after(client: TestClient, llm_at_capacity: None, stream: bool) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"  # rounded up, never earlier than asked
    error = response.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "overloaded"
    assert client.get("/health").status_code == 200


def test_the_websocket_reports_shedding_and_stays_open(client: TestClient, llm_at_capacity: None) -> None:
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(CHAT)
        event = ws.receive_json()
        assert event["type"] == "error" and event["error"]["code"] == "overloaded"
        ws.send_json({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert ws.receive_json()["error"]["code"] == "model_not_found"


def test_an_unreachable_redis_is_a_503_not_a_500() -> None:
    error = to_error(RedisConnectionError("Error 111 connecting to localhost:6379. Connection refused."))
    assert (error.status, error.code) == (503, "unavailable")
    assert error.response().headers["retry-after"] == "1"


class _RefusingHandle:
    """Stands in for a DeploymentHandle whose deployment's queue is full."""

    def options(self, **_: object) -> _RefusingHandle:
        return self

    def __getattr__(self, method: str) -> _RefusingHandle:
        return self

    def remote(self, *_: object) -> object:
        return self

    def __await__(self):  # type: ignore[no-untyped-def]
        raise BackPressureError(num_queued_requests=4, max_queued_requests=4, retry_after_s=None)
        yield  # pragma: no cover

    def __aiter__(self) -> _RefusingHandle:
        return self

    async def __anext__(self) -> object:
        raise BackPressureError(num_queued_requests=4, max_queued_requests=4, retry_after_s=7)


async def test_the_handle_endpoint_turns_ray_refusals_into_stage_unavailable() -> None:
    endpoint = HandleEndpoint(_RefusingHandle())
    with pytest.raises(StageUnavailable) as called:
        await endpoint.call("embed", ["x"])
    assert called.value.overloaded and called.value.retry_after_s is None
    with pytest.raises(StageUnavailable) as streamed:
        async for _ in endpoint.stream("generate", "request"):
            pass
    assert streamed.value.retry_after_s == 7
    assert to_error(streamed.value).response().headers["retry-after"] == "7"


@pytest.mark.parametrize("stream", [False, True])
def test_an_llm_that_does_not_start_answering_is_a_503_not_an_endless_wait(
        client: TestClient, graph: FakeGraph, settings: AppSettings, stream: bool) -> None:
    """While no LLM replica is up (its engine restarting), the call would wait for one
    indefinitely; the first chunk has a deadline (`server.generation_start_timeout_s`)."""
    settings.server.generation_start_timeout_s = 0.2
    graph.llm.delay_s = 5.0
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}],
            "stream": stream, "memserve": {"cache": False}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable" and int(response.headers["retry-after"]) >= 1
    graph.llm.delay_s = 0.0
    assert client.post("/v1/chat/completions", json=body).status_code == 200  # and it serves again
