"""Optional API keys: OpenAI-style 401s, an open health probe, guarded WebSocket; tenants'
hashed keys, admin-only routes, per-key rate limits (429 + Retry-After), auth off by default."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from serve_app.app import create_app
from serve_app.ratelimit import RateLimiter
from serve_app.runtime import build_runtime
from serve_app.settings import AppSettings, RateLimitSettings, ServerSettings, TenantSettings
from serve_app.tenants import SEP, TenantDirectory, static_tenants
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


# ----------------------------------------------------------------------------- tenants, hashed keys, rate limits


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def app_with(settings: AppSettings, graph: FakeGraph) -> TestClient:
    return TestClient(create_app(build_runtime(settings, graph.clients(settings.cache), graph.store)))


def test_auth_is_off_by_default(settings: AppSettings, graph: FakeGraph) -> None:
    """No keys anywhere: open, one implicit default tenant with admin rights, no rate limit."""
    assert TenantDirectory.from_settings(AppSettings().server, environ={}).enabled is False
    with app_with(settings, graph) as client:
        assert client.post("/v1/memories", json={"user": "alice", "text": "hello"}).status_code == 200
        assert client.get("/v1/metrics").status_code == 200  # admin routes too
        assert [t["name"] for t in client.get("/v1/tenants").json()["data"]] == ["default"]
        refused = client.post("/v1/tenants", json={"name": "acme"})  # would lock the open app
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "auth_disabled"
        assert all(client.get("/v1/models").status_code == 200 for _ in range(30))


def test_config_holds_only_digests(settings: AppSettings) -> None:
    with pytest.raises(ValidationError) as refused:
        TenantSettings(name="acme", keys=["sk-plaintext-key"])
    assert "sk-plaintext-key" not in str(refused.value)  # the error never echoes a key
    tenant = TenantSettings(name="acme", keys=[digest("sk-a").upper()])
    assert tenant.keys == [digest("sk-a")]
    with pytest.raises(ValidationError):
        ServerSettings(tenants=[TenantSettings(name=n, keys=[digest("k")]) for n in ("a", "b")])
    with pytest.raises(ValidationError):
        TenantSettings(name=f"a{SEP}b")


def test_environment_keys_are_hashed_at_load(settings: AppSettings) -> None:
    settings.server.api_keys = ["sk-legacy"]
    environ = {"MEMSERVE_TENANT_KEYS": "acme=sk-acme-env, globex=sk-globex-env", "MEMSERVE_API_KEYS": "sk-legacy-env"}
    directory = TenantDirectory.from_settings(settings.server, environ=environ)
    held = repr(vars(directory))
    for key in ("sk-acme-env", "sk-globex-env", "sk-legacy-env"):
        assert key not in held and digest(key) in held
    tenants = {t.name: t for t in static_tenants(settings.server, environ)}
    assert tenants["default"].admin and tenants["default"].digests == {digest("sk-legacy"), digest("sk-legacy-env")}
    assert not tenants["acme"].admin and tenants["acme"].source == "env"
    with pytest.raises(ValueError) as bad:
        static_tenants(settings.server, {"MEMSERVE_TENANT_KEYS": "sk-no-tenant-given"})
    assert "sk-no-tenant-given" not in str(bad.value)


def test_legacy_keys_are_the_default_tenant_and_read_existing_data(
    settings: AppSettings, graph: FakeGraph, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with app_with(settings, graph) as open_app:  # data written before auth was turned on
        open_app.post("/v1/memories", json={"user": "alice", "text": "written while open"})
    settings.server.api_keys = ["sk-config"]
    monkeypatch.setenv("MEMSERVE_TENANT_KEYS", "acme=sk-acme")
    with app_with(settings, graph) as client:
        listed = client.get("/v1/memories", params={"user": "alice"}, headers=bearer("sk-config")).json()["data"]
        assert [m["text"] for m in listed] == ["written while open"]
        assert client.get("/v1/metrics", headers=bearer("sk-config")).status_code == 200  # legacy keys stay admin
        other = client.get("/v1/memories", params={"user": "alice"}, headers=bearer("sk-acme")).json()["data"]
        assert other == []


def test_admin_routes_need_an_admin_key(settings: AppSettings, graph: FakeGraph) -> None:
    settings.server.tenants = [TenantSettings(name="acme", keys=[digest("sk-a")]),
                               TenantSettings(name="ops", keys=[digest("sk-ops")], admin=True)]
    with app_with(settings, graph) as client:
        for method, path in (("GET", "/v1/cache/stats"), ("POST", "/v1/cache/clear"), ("GET", "/v1/metrics"),
                             ("POST", "/v1/catalog"), ("GET", "/v1/tenants"), ("POST", "/v1/tenants"),
                             ("GET", "/v1/memories/consolidation")):
            refused = client.request(method, path, headers=bearer("sk-a"), json={})
            assert refused.status_code == 403, (method, path)
            assert refused.json()["error"] == {"message": "this endpoint needs an admin API key",
                                               "type": "permission_error", "param": None, "code": "admin_required"}
        assert client.get("/v1/metrics", headers=bearer("sk-ops")).status_code == 200


@pytest.fixture
def limited(settings: AppSettings, graph: FakeGraph) -> Iterator[TestClient]:
    slow = RateLimitSettings(requests_per_s=0.01, burst=3)  # refills one token per 100 s
    settings.server.tenants = [TenantSettings(name="acme", keys=[digest("sk-a")], rate_limit=slow),
                               TenantSettings(name="globex", keys=[digest("sk-b")])]
    with app_with(settings, graph) as client:
        yield client


def test_rate_limit_is_429_with_retry_after_after_the_burst(limited: TestClient) -> None:
    assert all(limited.get("/v1/models", headers=bearer("sk-a")).status_code == 200 for _ in range(3))
    refused = limited.post("/v1/memories", json={"user": "a", "text": "x"}, headers=bearer("sk-a"))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "100"
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert limited.get("/v1/models", headers=bearer("sk-a")).status_code == 429
    # Other keys, bad keys and the health probe are not affected.
    assert limited.get("/v1/models", headers=bearer("sk-b")).status_code == 200
    assert limited.get("/v1/models", headers=bearer("sk-wrong")).status_code == 401
    assert limited.get("/health").status_code == 200


def test_rate_limit_on_the_websocket(limited: TestClient) -> None:
    with limited.websocket_connect("/ws/chat", headers=bearer("sk-a")) as ws:  # the handshake takes a token
        ws.send_text("not json")
        assert ws.receive_json()["error"]["code"] != "rate_limit_exceeded"  # a token: the app answers
        ws.send_text("not json")
        assert ws.receive_json()["error"]["code"] != "rate_limit_exceeded"
        ws.send_text("not json")  # the bucket is empty: refused here, the socket stays open
        assert ws.receive_json() == {"type": "error", "error": {
            "message": "rate limit exceeded for this API key; retry after 100 s", "type": "rate_limit_error",
            "param": None, "code": "rate_limit_exceeded"}}
    with pytest.raises(WebSocketDisconnect) as refused, \
            limited.websocket_connect("/ws/chat", headers=bearer("sk-a")) as ws:
        ws.receive_text()
    assert refused.value.code == 1013


def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limit = RateLimitSettings(requests_per_s=2, burst=2)
    assert [limiter.check("k", limit) for _ in range(2)] == [0.0, 0.0]
    assert limiter.check("k", limit) == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.check("k", limit) == 0.0 and limiter.check("other", limit) == 0.0
    assert limiter.check("k", None) == 0.0
