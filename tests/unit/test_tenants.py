"""Tenants: two tenants' keys against EVERY route of the app, and the naming rules.

`CASES` has one scenario per route (method, path); `test_every_route_has_a_case` fails when
the app gets a route without one, so a new endpoint cannot skip the isolation check. Each
scenario seeds both tenants (`world`: user `alice` in each, with different memories) and
checks that tenant B (globex) neither sees nor changes anything of tenant A (acme), that
admin-only routes refuse non-admin keys with 403, and that no response shows an internal
name (`SEP`). The prompt the fake LLM received is read directly, so "B never sees A's
memories or documents in the prompt" is checked on what the model was given.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import Route
from starlette.websockets import WebSocketDisconnect

from serve_app.app import create_app
from serve_app.core.embedding_cache import EmbeddingCache
from serve_app.protocol import check_user
from serve_app.runtime import build_runtime
from serve_app.settings import AppSettings, TenantSettings
from serve_app.tenants import SEP, Namespace
from tests.fakes import FakeGraph

MODEL = "smollm2-135m-instruct"
KEYS = {"acme": "sk-acme-test-1", "globex": "sk-globex-test-1", "ops": "sk-ops-test-1"}
CATALOG = {"products": [{"name": "Trail Runner", "description": "running shoes", "category": "shoes", "price": 50}]}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Caller:
    """A client acting with one key (None: no key). Every response is checked for internal
    names: the caller only ever sees its own ids."""

    def __init__(self, client: TestClient, key: str | None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, headers=self.headers, **kwargs)
        assert SEP not in response.text and "\\u001f" not in response.text, response.text
        return response

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    def chat(self, content: str, user: str | None = "alice", **memserve: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}],
                                "memserve": {"write_back": False, **memserve}}
        if user:
            body["user"] = user
        result: dict[str, Any] = self.ok("POST", "/v1/chat/completions", json=body)
        return result

    def upload(self, name: str, data: bytes, scope: str = "shared") -> dict[str, Any]:
        accepted: dict[str, Any] = self.ok("POST", "/v1/documents", files={"file": (name, data)}, data={"scope": scope})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = self.ok("GET", f"/v1/documents/jobs/{accepted['job_id']}")
            if job["status"] in ("done", "failed"):
                assert job["status"] == "done", job
                return accepted
            time.sleep(0.02)
        raise TimeoutError(accepted)


@dataclass
class World:
    client: TestClient
    graph: FakeGraph
    app: FastAPI
    a: Caller  # acme
    b: Caller  # globex
    admin: Caller  # ops (admin: true)
    anon: Caller
    a_memory: str  # id of acme/alice's memory

    def prompt(self) -> str:
        """Everything the fake LLM was given for the last generation (messages, prompt,
        and the memories, excerpts and products beside them)."""
        request = self.graph.llm.last_request
        assert request is not None
        return repr(request)

    def texts(self, caller: Caller, user: str = "alice") -> list[str]:
        return [m["text"] for m in caller.ok("GET", "/v1/memories", params={"user": user})["data"]]


def tenant_settings(settings: AppSettings) -> AppSettings:
    settings.server.tenants = [
        TenantSettings(name="acme", keys=[digest(KEYS["acme"])]),
        TenantSettings(name="globex", keys=[digest(KEYS["globex"])]),
        TenantSettings(name="ops", keys=[digest(KEYS["ops"])], admin=True),
    ]
    return settings


@pytest.fixture
def world(settings: AppSettings, graph: FakeGraph) -> Iterator[World]:
    tenant_settings(settings)
    app = create_app(build_runtime(settings, graph.clients(settings.cache), graph.store))  # with the near cache
    with TestClient(app) as client:
        a, b = Caller(client, KEYS["acme"]), Caller(client, KEYS["globex"])
        added = a.ok("POST", "/v1/memories", json={"user": "alice", "text": "My dog is named Biscuit"})
        b.ok("POST", "/v1/memories", json={"user": "alice", "text": "My cat is named Tom"})
        yield World(client, graph, app, a, b, Caller(client, KEYS["ops"]), Caller(client, None), added["ids"][0])


def forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "admin_required"
    assert response.json()["error"]["type"] == "permission_error"


# ----------------------------------------------------------------------------- scenarios


def models(w: World) -> None:
    assert w.anon("GET", "/v1/models").status_code == 401
    assert w.b.ok("GET", "/v1/models")["data"][0]["id"] == MODEL


def model(w: World) -> None:
    assert w.anon("GET", f"/v1/models/{MODEL}").status_code == 401
    assert w.b.ok("GET", f"/v1/models/{MODEL}")["id"] == MODEL


def embeddings(w: World) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": "the same text"}
    assert w.anon("POST", "/v1/embeddings", json=body).status_code == 401
    w.a.ok("POST", "/v1/embeddings", json=body)
    w.b.ok("POST", "/v1/embeddings", json=body)
    # Each tenant's embeddings go through its own Embedder cache namespace.
    assert {"acme", "globex"} <= w.graph.embedder.namespaces


def chat(w: World) -> None:
    assert w.anon("POST", "/v1/chat/completions", json={"model": MODEL, "messages": []}).status_code == 401
    a = w.a.chat("What is my dog named?")
    assert "Biscuit" in w.prompt() and "Biscuit" in a["choices"][0]["message"]["content"]
    b = w.b.chat("What is my dog named?")
    assert "Biscuit" not in w.prompt() and "Biscuit" not in json.dumps(b)
    assert [m["text"] for m in b["memserve"]["memories"]] == ["My cat is named Tom"]
    # The response cache: the same prompt without a user (the shared scope) by B is not A's answer.
    generations = w.graph.llm.generations
    assert not w.a.chat("Tell me a joke", user=None)["memserve"]["cached"]
    assert w.a.chat("Tell me a joke", user=None)["memserve"]["cache"] == "exact"
    assert not w.b.chat("Tell me a joke", user=None)["memserve"]["cached"]
    assert w.graph.llm.generations == generations + 2
    # ... nor does the same prompt for a user of the same name.
    assert not w.a.chat("Hello there")["memserve"]["cached"] and w.a.chat("Hello there")["memserve"]["cached"]
    assert not w.b.chat("Hello there")["memserve"]["cached"]
    # Write-back lands in the caller's tenant.
    w.b.chat("I love sailing", write_back=True)
    deadline = time.monotonic() + 30
    while "I love sailing" not in w.texts(w.b) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "I love sailing" in w.texts(w.b) and not any("sailing" in t for t in w.texts(w.a))


def completions(w: World) -> None:
    body = {"model": MODEL, "prompt": "What is my dog named?", "user": "alice", "memserve": {"write_back": False}}
    assert w.anon("POST", "/v1/completions", json=body).status_code == 401
    w.a.ok("POST", "/v1/completions", json=body)
    assert "Biscuit" in w.prompt()
    b = w.b.ok("POST", "/v1/completions", json=body)
    assert "Biscuit" not in w.prompt() and "Biscuit" not in json.dumps(b)
    plain = {"model": MODEL, "prompt": "Once upon a time"}
    assert not w.a.ok("POST", "/v1/completions", json=plain)["memserve"]["cached"]
    assert w.a.ok("POST", "/v1/completions", json=plain)["memserve"]["cached"]
    assert not w.b.ok("POST", "/v1/completions", json=plain)["memserve"]["cached"]


def websocket(w: World) -> None:
    message = json.dumps({"model": MODEL, "user": "alice", "messages": [{"role": "user", "content": "my dog?"}],
                          "memserve": {"write_back": False}})
    with pytest.raises(WebSocketDisconnect), w.client.websocket_connect("/ws/chat") as ws:
        ws.receive_text()
    for caller, expected in ((w.a, True), (w.b, False)):
        with w.client.websocket_connect("/ws/chat", headers=caller.headers) as ws:
            ws.send_text(message)
            events = []
            while not events or events[-1]["type"] not in ("done", "error"):
                events.append(ws.receive_json())
        assert events[-1]["type"] == "done"
        assert ("Biscuit" in json.dumps(events)) is expected and ("Biscuit" in w.prompt()) is expected
        assert SEP not in json.dumps(events)


def add_memories(w: World) -> None:
    assert w.anon("POST", "/v1/memories", json={"user": "alice", "text": "x"}).status_code == 401
    w.b.ok("POST", "/v1/memories", json={"user": "alice", "text": "My dog is named Rex"})
    assert w.texts(w.a) == ["My dog is named Biscuit"]
    assert sorted(w.texts(w.b)) == ["My cat is named Tom", "My dog is named Rex"]


def list_memories(w: World) -> None:
    assert w.texts(w.a) == ["My dog is named Biscuit"] and w.texts(w.b) == ["My cat is named Tom"]
    assert w.texts(w.admin) == []  # the ops tenant has its own alice, too
    assert w.anon("GET", "/v1/memories", params={"user": "alice"}).status_code == 401


def search_memories(w: World) -> None:
    body = {"user": "alice", "query": "dog named Biscuit", "k": 5}
    assert w.a.ok("POST", "/v1/memories/search", json=body)["results"][0]["text"] == "My dog is named Biscuit"
    assert "Biscuit" not in json.dumps(w.b.ok("POST", "/v1/memories/search", json=body))


def memory_stats(w: World) -> None:
    stats = w.b.ok("GET", "/v1/memories/stats", params={"user": "alice"})
    assert stats["user"] == "alice" and stats["total"] == 1
    assert w.admin.ok("GET", "/v1/memories/stats", params={"user": "alice"})["total"] == 0


def get_memory(w: World) -> None:
    path = f"/v1/memories/{w.a_memory}"
    assert w.b("GET", path, params={"user": "alice"}).status_code == 404
    assert w.a.ok("GET", path, params={"user": "alice"})["text"] == "My dog is named Biscuit"


def patch_memory(w: World) -> None:
    path = f"/v1/memories/{w.a_memory}"
    assert w.b("PATCH", path, json={"user": "alice", "text": "hijacked"}).status_code == 404
    assert w.texts(w.a) == ["My dog is named Biscuit"]
    assert w.a.ok("PATCH", path, json={"user": "alice", "importance": 0.9})["memory"]["importance"] == 0.9


def delete_memory(w: World) -> None:
    path = f"/v1/memories/{w.a_memory}"
    assert w.b("DELETE", path, params={"user": "alice"}).status_code == 404
    assert w.texts(w.a) == ["My dog is named Biscuit"]
    assert w.a.ok("DELETE", path, params={"user": "alice"})["deleted"] is True


def history(w: World) -> None:
    path = f"/v1/memories/{w.a_memory}/history"
    assert w.b("GET", path, params={"user": "alice"}).status_code == 404
    assert w.a.ok("GET", path, params={"user": "alice"})["history"][0]["event"] == "ADD"


def forget_user(w: World) -> None:
    assert w.b.ok("DELETE", "/v1/users/alice")["user"] == "alice"
    assert w.texts(w.b) == [] and w.texts(w.a) == ["My dog is named Biscuit"]


def consolidate(w: World) -> None:
    run = w.b.ok("POST", "/v1/memories/consolidate", json={"user": "alice"})
    assert run["run"]["users"] == 1 and run["stats"] is None
    forbidden(w.b("POST", "/v1/memories/consolidate", json={}))
    assert w.admin.ok("POST", "/v1/memories/consolidate", json={})["run"]["users"] >= 2
    assert w.texts(w.a) == ["My dog is named Biscuit"]


def consolidation_stats(w: World) -> None:
    forbidden(w.a("GET", "/v1/memories/consolidation"))
    assert "runs" in w.admin.ok("GET", "/v1/memories/consolidation")


SECRET = b"The launch code of project Falcon is PINEAPPLE."


def documents(w: World) -> None:
    """Upload, job, list, delete and knowledge search in chat, between two tenants."""
    shared = w.a.upload("falcon.txt", SECRET)
    own = w.a.upload("alice.txt", b"Alice keeps her spare key under the blue flowerpot.", scope="user:alice")
    assert w.b("GET", f"/v1/documents/jobs/{shared['job_id']}").status_code == 404
    listed = w.a.ok("GET", "/v1/documents")["data"]
    assert sorted((d["filename"], d["scope"]) for d in listed) == [("alice.txt", "user:alice"),
                                                                   ("falcon.txt", "shared")]
    assert w.b.ok("GET", "/v1/documents")["data"] == []
    # Knowledge search in chat: B's prompt never gets A's shared or user documents.
    assert w.a.chat("What is the launch code of project Falcon?", cache=False)["memserve"]["sources"]
    assert "PINEAPPLE" in w.prompt()
    b = w.b.chat("What is the launch code of project Falcon?", cache=False)
    assert b["memserve"]["sources"] == [] and "PINEAPPLE" not in w.prompt()
    b = w.b.chat("Where is the spare key? blue flowerpot", cache=False)
    assert b["memserve"]["sources"] == [] and "keeps her spare key" not in w.prompt()
    # The same content in B's shared scope is B's own document, not a link to A's.
    mine = w.b.upload("falcon.txt", SECRET)
    assert mine["document_id"] != shared["document_id"]
    assert w.b("DELETE", f"/v1/documents/{shared['document_id']}").status_code == 404
    assert w.a.ok("DELETE", f"/v1/documents/{own['document_id']}")["deleted"] is True
    assert [d["filename"] for d in w.a.ok("GET", "/v1/documents")["data"]] == ["falcon.txt"]
    assert [d["id"] for d in w.b.ok("GET", "/v1/documents")["data"]] == [mine["document_id"]]


def upload(w: World) -> None:
    assert w.anon("POST", "/v1/documents", files={"file": ("a.txt", b"x")}).status_code == 401
    assert w.b("POST", "/v1/documents", files={"file": ("a.txt", b"x")}, data={"scope": "user:a\x1fb"}) \
        .status_code == 400
    documents(w)


def cache_stats(w: World) -> None:
    forbidden(w.a("GET", "/v1/cache/stats"))
    assert "hits" in w.admin.ok("GET", "/v1/cache/stats")


def cache_clear(w: World) -> None:
    forbidden(w.a("POST", "/v1/cache/clear", json={}))
    for caller in (w.a, w.b):
        caller.chat("Tell me a joke", user=None)
        assert caller.chat("Tell me a joke", user=None)["memserve"]["cached"]
    cleared = w.admin.ok("POST", "/v1/cache/clear", json={"tenant": "acme"})
    assert cleared["cleared"] >= 1 and cleared["tenant"] == "acme"
    assert not w.a.chat("Tell me a joke", user=None)["memserve"]["cached"]
    assert w.b.chat("Tell me a joke", user=None)["memserve"]["cached"]
    assert w.admin("POST", "/v1/cache/clear", json={"tenant": "nobody"}).status_code == 404
    assert w.admin.ok("POST", "/v1/cache/clear", json={})["scope"] == "all"
    assert not w.b.chat("Tell me a joke", user=None)["memserve"]["cached"]


def metrics(w: World) -> None:
    forbidden(w.b("GET", "/v1/metrics"))
    assert "operations" in w.admin.ok("GET", "/v1/metrics")


def catalog(w: World) -> None:
    forbidden(w.a("POST", "/v1/catalog", json=CATALOG))
    assert w.admin.ok("POST", "/v1/catalog", params={"tenant": "acme"}, json=CATALOG)["count"] == 1
    assert w.admin("POST", "/v1/catalog", params={"tenant": "nobody"}, json=CATALOG).status_code == 404
    question = "Can you recommend running shoes under $60?"
    assert [p["name"] for p in w.a.chat(question)["memserve"]["products"]] == ["Trail Runner"]
    assert w.b.chat(question)["memserve"]["products"] == [] and "Trail Runner" not in w.prompt()
    assert w.admin.chat(question)["memserve"]["products"] == []


def health(w: World) -> None:
    assert w.anon.ok("GET", "/health") == {"status": "ok"}


def list_tenants(w: World) -> None:
    forbidden(w.a("GET", "/v1/tenants"))
    listed = w.admin("GET", "/v1/tenants")
    assert [t["name"] for t in listed.json()["data"]] == ["acme", "globex", "ops"]
    for key in KEYS.values():  # never key material: neither keys nor digests
        assert key not in listed.text and digest(key) not in listed.text and digest(key)[:12] not in listed.text


def create_tenant(w: World) -> None:
    forbidden(w.a("POST", "/v1/tenants", json={"name": "initech"}))
    created = w.admin("POST", "/v1/tenants", json={"name": "initech", "rate_limit": {"requests_per_s": 5, "burst": 5}})
    assert created.status_code == 201, created.text
    key = created.json()["api_key"]
    stored = json.dumps(w.graph.store.kv_items("tenants"))
    assert key not in stored and digest(key) in stored  # only the digest is kept
    initech = Caller(w.client, key)
    assert w.texts(initech) == []
    initech.ok("POST", "/v1/memories", json={"user": "alice", "text": "initech alice"})
    assert w.texts(w.a) == ["My dog is named Biscuit"]
    assert w.admin("POST", "/v1/tenants", json={"name": "acme"}).status_code == 409
    assert w.admin("POST", "/v1/tenants", json={"name": "bad name"}).status_code == 400


def delete_tenant(w: World) -> None:
    key = w.admin.ok("POST", "/v1/tenants", json={"name": "initech"})["api_key"]
    assert w.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    forbidden(w.a("DELETE", "/v1/tenants/initech"))
    assert w.admin.ok("DELETE", "/v1/tenants/initech")["deleted"] is True
    assert w.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert w.admin("POST", "/v1/tenants", json={"name": "initech"}).status_code == 409  # no one inherits its data
    assert w.admin("DELETE", "/v1/tenants/acme").status_code == 409  # configured: changed in the YAML only
    assert w.admin("DELETE", "/v1/tenants/nobody").status_code == 404


def docs(path: str) -> Callable[[World], None]:
    def check(w: World) -> None:  # the schema names U+001F itself (user id patterns): no name check
        assert w.client.get(path).status_code == 401
        assert w.client.get(path, headers=w.a.headers).status_code == 200

    return check


CASES: dict[tuple[str, str], Callable[[World], None]] = {
    ("GET", "/health"): health,
    ("GET", "/v1/models"): models,
    ("GET", "/v1/models/{model_id:path}"): model,
    ("POST", "/v1/embeddings"): embeddings,
    ("POST", "/v1/chat/completions"): chat,
    ("POST", "/v1/completions"): completions,
    ("WS", "/ws/chat"): websocket,
    ("POST", "/v1/memories"): add_memories,
    ("GET", "/v1/memories"): list_memories,
    ("POST", "/v1/memories/search"): search_memories,
    ("GET", "/v1/memories/stats"): memory_stats,
    ("GET", "/v1/memories/{memory_id}"): get_memory,
    ("PATCH", "/v1/memories/{memory_id}"): patch_memory,
    ("DELETE", "/v1/memories/{memory_id}"): delete_memory,
    ("GET", "/v1/memories/{memory_id}/history"): history,
    ("DELETE", "/v1/users/{user}"): forget_user,
    ("POST", "/v1/memories/consolidate"): consolidate,
    ("GET", "/v1/memories/consolidation"): consolidation_stats,
    ("POST", "/v1/documents"): upload,
    ("GET", "/v1/documents/jobs/{job_id}"): documents,
    ("GET", "/v1/documents"): documents,
    ("DELETE", "/v1/documents/{document_id}"): documents,
    ("GET", "/v1/cache/stats"): cache_stats,
    ("POST", "/v1/cache/clear"): cache_clear,
    ("GET", "/v1/metrics"): metrics,
    ("POST", "/v1/catalog"): catalog,
    ("GET", "/v1/tenants"): list_tenants,
    ("POST", "/v1/tenants"): create_tenant,
    ("DELETE", "/v1/tenants/{name}"): delete_tenant,
    ("GET", "/openapi.json"): docs("/openapi.json"),
    ("GET", "/docs"): docs("/docs"),
    ("GET", "/docs/oauth2-redirect"): docs("/docs/oauth2-redirect"),
    ("GET", "/redoc"): docs("/redoc"),
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        if isinstance(route, APIWebSocketRoute):
            found.add(("WS", route.path))
        elif isinstance(route, (APIRoute, Route)):
            found |= {(method, route.path) for method in route.methods or () if method != "HEAD"}
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return found


def test_every_route_has_a_case(world: World) -> None:
    assert app_routes(world.app) == set(CASES)


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_keeps_tenants_apart(world: World, route: tuple[str, str]) -> None:
    CASES[route](world)


# ----------------------------------------------------------------------------- names


def test_internal_names_cannot_collide() -> None:
    acme, default = Namespace("acme"), Namespace()
    assert default.user("alice") == "alice" and default.scope("shared") == "shared"  # no migration
    assert default.scope("user:alice") == "user:alice" and default.space("catalog") == "catalog"
    assert default.cache_prefix is None and default.embedding_namespace is None
    assert acme.user("alice") == f"acme{SEP}alice" != Namespace("acm").user("ealice")
    assert acme.external_user(acme.user("alice")) == "alice"
    assert acme.external_user("alice") is None and default.external_user(acme.user("alice")) is None
    assert Namespace("globex").external_user(acme.user("alice")) is None
    for scope in ("shared", "user:alice"):
        assert acme.external_scope(acme.scope(scope)) == scope
        assert default.external_scope(acme.scope(scope)) is None and acme.external_scope(scope) is None
    # The separator is a control character, which no user id may contain.
    with pytest.raises(ValueError):
        check_user(f"x{SEP}alice")


def test_user_ids_with_the_separator_are_refused(world: World) -> None:
    response = world.a("POST", "/v1/memories", json={"user": f"globex{SEP}alice", "text": "x"})
    assert response.status_code == 400
    assert world.a("GET", "/v1/memories", params={"user": f"globex{SEP}alice"}).status_code == 400


def test_embedding_cache_keeps_tenants_apart() -> None:
    cache = EmbeddingCache(10)
    cache.store("secret text", np.ones(2, np.float32), "acme")
    assert cache.lookup(["secret text"], "globex") == ({}, [0])
    assert cache.lookup(["secret text"]) == ({}, [0])
    assert list(cache.lookup(["secret text"], "acme")[0]) == [0]
