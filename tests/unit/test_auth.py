"""Optional API keys: OpenAI-style 401s, an open health probe, guarded WebSocket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_app.app import create_app
from serve_app.runtime import build_runtime
from serve_app.settings import AppSettings
from tests.fakes import FakeGraph

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def guarded(settings: AppSettings, graph: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    settings.server.api_keys = ["sk-config"]
    monkeypatch.setenv("MEMSERVE_API_KEYS", "sk-env-1, sk-env-2")
    with TestClient(create_app(build_runtime(settings, graph.clients(settings.cache), graph.store))) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_without_a_valid_key_get_openai_401s(guarded: TestClient) -> None:
    for headers in ({}, bearer("sk-wrong"), {"Authorization": "Basic c2stY29uZmln"}):
        response = guarded.get("/v1/models", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.json()["error"]["type"] == "authentication_error"
    refused = guarded.post("/v1/memories", json={"user": "a", "text": "secret"})
    assert refused.status_code == 401
    assert guarded.get("/v1/memories", params={"user": "a"}, headers=bearer("sk-config")).json()["data"] == []


def test_configured_and_environment_keys_work_and_health_stays_open(guarded: TestClient) -> None:
    assert guarded.get("/health").status_code == 200
    for key in ("sk-config", "sk-env-1", "sk-env-2"):
        assert guarded.get("/v1/models", headers=bearer(key)).status_code == 200


def test_websocket_needs_the_key(guarded: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, guarded.websocket_connect("/ws/chat") as ws:
        ws.receive_text()
    assert refused.value.code == 1008
    with guarded.websocket_connect("/ws/chat", headers=bearer("sk-env-1")) as ws:
        ws.send_text("not json")
        assert ws.receive_json()["type"] == "error"


def test_no_keys_means_open(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 200
