"""Hostile inputs: each gets a clear 4xx (or a bounded, correct answer), never a 5xx, and the
replica still serves afterwards (`/health`, a write, a search that finds it, a chat that uses it).

Over the fakes (`tests/fakes.py`), with the server's own body limit (2 MB) unless a test is
about the limit: the conftest's 10 kB would refuse most of these bodies before the code
under test saw them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.protocol.rules import MAX_METADATA_BYTES, MAX_METADATA_DEPTH
from serve_app.settings import AppSettings
from tests.fakes import FakeGraph
from tests.unit.conftest import app_over

MODEL = "smollm2-135m-instruct"
EMBEDDER = "all-MiniLM-L6-v2"


@pytest.fixture
def api(settings: AppSettings, graph: FakeGraph) -> Iterator[TestClient]:
    """A replica with the default body limit; a 500 comes back as a response, not an exception."""
    settings.server.max_body_bytes = AppSettings().server.max_body_bytes
    with TestClient(app_over(settings, graph).app, raise_server_exceptions=False) as client:
        yield client
        assert_still_serves(client)


def assert_still_serves(client: TestClient) -> None:
    """The replica is not left unhealthy: health, a write, a search that sees it, a chat that uses it."""
    assert client.get("/health").json() == {"status": "ok"}
    added = client.post("/v1/memories", json={"user": "carol", "text": "Carol's cat is called Miso."})
    assert added.status_code == 200, added.text
    found = client.post("/v1/memories/search",
                        json={"user": "carol", "query": "what is the cat called", "min_seq": added.json()["seq"]})
    assert found.status_code == 200 and any("Miso" in hit["text"] for hit in found.json()["results"]), found.text
    chat = client.post("/v1/chat/completions", json={
        "model": MODEL, "user": "carol", "messages": [{"role": "user", "content": "What is my cat called?"}],
        "memserve": {"cache": False, "write_back": False}})
    assert chat.status_code == 200 and "Miso" in chat.json()["choices"][0]["message"]["content"], chat.text


def refused(response: Any, status: int = 400, param: str | None = None, says: str = "") -> dict[str, Any]:
    """An OpenAI-style error with `status` (naming `param`, saying `says`), never a 5xx."""
    assert response.status_code == status, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param, error
    assert says in error["message"], error
    return error


def post_raw(client: TestClient, path: str, body: bytes | str, content_type: str = "application/json") -> Any:
    return client.post(path, content=body, headers={"content-type": content_type})


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], **extra}


def nested(depth: int) -> dict[str, Any]:
    """A metadata object `depth` levels deep (itself is level 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"next": value}
    return value


def upload_raw(client: TestClient, filename: bytes, content: bytes = b"some text") -> Any:
    """A multipart upload with the filename's bytes exactly as given."""
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + filename
            + b'"\r\nContent-Type: text/plain\r\n\r\n' + content + b"\r\n--b--\r\n")
    return post_raw(client, "/v1/documents", body, "multipart/form-data; boundary=b")


def memories_of(client: TestClient, user: str) -> list[dict[str, Any]]:
    response = client.get("/v1/memories", params={"user": user})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


# --------------------------------------------------------------------------- huge numbers


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/memories/search", {"user": "a", "query": "x", "k": 10**30}, "k"),
    ("/v1/memories/search", {"user": "a", "query": "x", "min_seq": 2**64}, "min_seq"),
    ("/v1/memories", {"user": "a", "text": "x", "importance": 1e308}, "importance"),
    ("/v1/chat/completions", chat_body(max_tokens=10**30), "max_tokens"),
    ("/v1/chat/completions", chat_body(max_completion_tokens=2**63), "max_completion_tokens"),
    ("/v1/chat/completions", chat_body(seed=2**64), "seed"),
    ("/v1/chat/completions", chat_body(n=10**9), "n"),
    ("/v1/chat/completions", chat_body(logit_bias={"9" * 40: 1}), "logit_bias"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 10**18}, "max_tokens"),
    ("/v1/embeddings", {"model": EMBEDDER, "input": "hi", "dimensions": 10**30}, "dimensions"),
])
def test_huge_numbers_are_400s_naming_the_field(api: TestClient, path: str, body: dict[str, Any], param: str) -> None:
    refused(api.post(path, json=body), 400, param)


@pytest.mark.parametrize("number", ["1" + "0" * 5000, "1e400", "-1e400"])
def test_numbers_beyond_what_json_readers_hold_are_400s(api: TestClient, number: str) -> None:
    raw = '{"user": "a", "query": "x", "k": ' + number + "}"
    refused(post_raw(api, "/v1/memories/search", raw), 400, says="not valid JSON")


def test_huge_cursors_are_400s(api: TestClient) -> None:
    for cursor in ["9" * 19, "9" * 400, str(2**63)]:
        refused(api.get("/v1/memories", params={"user": "a", "cursor": cursor}), 400, "cursor")
    assert api.get("/v1/memories", params={"user": "a", "cursor": str(2**63 - 1)}).status_code == 200


def test_a_min_seq_no_write_has_reached_is_refused_at_once(api: TestClient) -> None:
    """Before: the search waited 5 s for the store to reach it, then failed with a 500."""
    seq = api.post("/v1/memories", json={"user": "a", "text": "first"}).json()["seq"]
    refused(api.post("/v1/memories/search", json={"user": "a", "query": "x", "min_seq": seq + 1000}), 409, "min_seq")
    assert api.post("/v1/memories/search", json={"user": "a", "query": "x", "min_seq": seq}).status_code == 200


def test_a_non_ascii_digit_token_id_is_a_400_not_a_500(api: TestClient) -> None:
    """`"²".isdigit()` is true and `int("²")` raises: it used to escape as a 500."""
    refused(api.post("/v1/chat/completions", json=chat_body(logit_bias={"²": 1})), 400, "logit_bias")


# --------------------------------------------------------------------------- NaN and Infinity


_CHAT = '{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], '


@pytest.mark.parametrize(("path", "raw"), [
    ("/v1/chat/completions", _CHAT + '"temperature": NaN}'),
    ("/v1/chat/completions", _CHAT + '"top_p": Infinity}'),
    ("/v1/chat/completions", _CHAT + '"logit_bias": {"5": -Infinity}}'),
    ("/v1/memories/search", '{"user": "a", "query": "hi", "filters": {"created_after": NaN}}'),
    ("/v1/memories", '{"user": "a", "text": "hi", "metadata": {"score": NaN}}'),
    ("/v1/memories", '{"user": "a", "text": "hi", "importance": Infinity}'),
])
def test_nan_and_infinity_are_not_json(api: TestClient, path: str, raw: str) -> None:
    error = refused(post_raw(api, path, raw.replace("MODEL", MODEL)), 400, says="is not JSON")
    assert "NaN" in error["message"] or "Infinity" in error["message"]
    assert memories_of(api, "a") == []  # nothing was written (NaN used to be stored, and read back as null)


def test_a_catalog_with_an_infinite_price_is_refused_and_the_catalog_kept(api: TestClient) -> None:
    assert api.post("/v1/catalog", json={"products": [{"name": "Mug", "price": 12.5}]}).status_code == 200
    refused(post_raw(api, "/v1/catalog", '{"products": [{"name": "Vase", "price": Infinity}]}'), 400, "products")
    csv = b"name,price\nVase,inf\n"
    refused(post_raw(api, "/v1/catalog", csv, "text/csv"), 400, "products")
    answer = api.post("/v1/chat/completions", json=chat_body(messages=[{"role": "user", "content": "buy a mug"}]))
    assert [p["name"] for p in answer.json()["memserve"]["products"]] == ["Mug"]


def test_websocket_messages_with_nan_get_an_error_event_and_the_socket_stays_open(api: TestClient) -> None:
    with api.websocket_connect("/ws/chat") as socket:
        socket.send_text(json.dumps(chat_body()).replace('"messages"', '"temperature": NaN, "messages"'))
        event = socket.receive_json()
        assert event["type"] == "error" and "NaN" in event["error"]["message"], event
        socket.send_text(json.dumps(chat_body()))
        events = [socket.receive_json()]
        while events[-1]["type"] != "done":
            events.append(socket.receive_json())
        assert events[0]["type"] == "token"


# --------------------------------------------------------------------------- invalid UTF-8


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/memories", "/v1/memories/search", "/v1/embeddings"])
def test_bodies_that_are_not_utf8_are_400s(api: TestClient, path: str) -> None:
    raw = b'{"model": "' + MODEL.encode() + b'", "user": "a", "text": "caf\xe9", "query": "\xff\xfe"}'
    refused(post_raw(api, path, raw), 400, says="not valid UTF-8")


def test_a_catalog_that_is_not_utf8_is_a_400(api: TestClient) -> None:
    refused(post_raw(api, "/v1/catalog", b"name,price\nCaf\xe9,1\n", "text/csv"), 400, "products")
    refused(post_raw(api, "/v1/catalog", b'{"products": [{"name": "Caf\xe9", "price": 1}]}'), 400, "products")


def test_an_upload_that_is_not_utf8_text_fails_its_job_with_a_reason(api: TestClient) -> None:
    accepted = api.post("/v1/documents", files={"file": ("notes.txt", b"caf\xe9 \xff\xfe", "text/plain")})
    assert accepted.status_code == 202, accepted.text
    deadline, url = time.monotonic() + 60, f"/v1/documents/jobs/{accepted.json()['job_id']}"
    while (job := api.get(url).json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    assert job["status"] == "failed" and "UTF-8" in job["error"], job


def test_query_strings_and_paths_that_are_not_utf8_are_not_5xx(api: TestClient) -> None:
    listed = api.get("/v1/memories?user=%FF%FE")
    assert listed.status_code in (200, 400), listed.text
    refused(api.get("/v1/memories/%FF?user=a"), 404, "memory_id")


# --------------------------------------------------------------------------- deep and large metadata


def test_metadata_is_bounded_in_depth(api: TestClient) -> None:
    deepest = api.post("/v1/memories", json={"user": "a", "text": "deep", "metadata": nested(MAX_METADATA_DEPTH)})
    assert deepest.status_code == 200, deepest.text
    assert memories_of(api, "a")[0]["metadata"] == nested(MAX_METADATA_DEPTH)  # stored and read back whole
    too_deep = nested(MAX_METADATA_DEPTH + 1)
    refused(api.post("/v1/memories", json={"user": "a", "text": "deeper", "metadata": too_deep}), 400, "metadata",
            says="nested")
    batch = {"user": "a", "memories": [{"text": "x", "metadata": {"list": [[[[[[[[["too deep"]]]]]]]]]}}]}
    refused(api.post("/v1/memories", json=batch), 400, "memories.0.metadata")
    memory_id = memories_of(api, "a")[0]["id"]
    refused(api.patch(f"/v1/memories/{memory_id}", json={"user": "a", "metadata": too_deep}), 400, "metadata")
    search = {"user": "a", "query": "deep", "filters": {"metadata": too_deep}}
    refused(api.post("/v1/memories/search", json=search), 400, "filters.metadata")
    assert len(memories_of(api, "a")) == 1


def test_metadata_is_bounded_in_size(api: TestClient) -> None:
    big = {"blob": "x" * MAX_METADATA_BYTES}
    refused(api.post("/v1/memories", json={"user": "a", "text": "big", "metadata": big}), 400, "metadata",
            says=f"{MAX_METADATA_BYTES} bytes")
    assert memories_of(api, "a") == []


def test_json_nested_past_what_the_parser_takes_is_a_400(api: TestClient) -> None:
    raw = '{"user": "a", "text": "x", "metadata": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    refused(post_raw(api, "/v1/memories", raw), 400, says="nested too deeply")


# --------------------------------------------------------------------------- path-like names


@pytest.mark.parametrize("user", ["../../etc/passwd", "..", "a/b", "%2e%2e", "..\\..\\x", "user:alice"])
def test_path_like_user_ids_are_just_names(api: TestClient, user: str) -> None:
    """Stored and listed under exactly that id, apart from every other user (ids never
    become file names: snapshots are named by a hash)."""
    assert api.post("/v1/memories", json={"user": user, "text": f"{user} likes green tea"}).status_code == 200
    assert api.post("/v1/memories", json={"user": "etc", "text": "etc likes coffee"}).status_code == 200
    assert [m["text"] for m in memories_of(api, user)] == [f"{user} likes green tea"]
    assert [m["text"] for m in memories_of(api, "etc")] == ["etc likes coffee"]


@pytest.mark.parametrize("user", ["a\x00b", "\x00", "tab\there", "__catalog", "a\nb"])
def test_user_ids_with_control_characters_or_system_prefix_are_400s(api: TestClient, user: str) -> None:
    refused(api.post("/v1/memories", json={"user": user, "text": "x"}), 400, "user")
    refused(api.get("/v1/memories", params={"user": user}), 400, "user")


def test_encoded_traversal_in_paths_reaches_no_other_route(api: TestClient) -> None:
    api.post("/v1/memories", json={"user": "etc", "text": "etc likes coffee"})
    # An encoded slash does not leave the route: no route matches, or the id is just unknown.
    for path in ["/v1/memories/..%2F..%2Fhealth?user=a", "/v1/users/..%2F..%2Fetc", "/v1/documents/jobs/..%2F..%2F"]:
        response = api.request("DELETE" if "/users/" in path else "GET", path)
        refused(response, 404)
    for memory_id in ["%2e%2e", "%00", "..%5C..%5C", "mem-%00"]:
        refused(api.get(f"/v1/memories/{memory_id}?user=a"), 404, "memory_id")
        refused(api.delete(f"/v1/memories/{memory_id}?user=a"), 404, "memory_id")
    refused(api.delete("/v1/users/a%00b"), 400, "user")
    refused(api.get("/v1/models/..%2F..%2Fhealth"), 404, "model")
    assert [m["text"] for m in memories_of(api, "etc")] == ["etc likes coffee"]


def test_upload_names_are_data_never_paths(api: TestClient, settings: AppSettings, tmp_path: Path) -> None:
    names = ["../../evil.txt", "..\\..\\evil.txt", "%2e%2e%2fevil.txt", "/etc/evil.txt"]
    for i, name in enumerate(names):
        accepted = api.post("/v1/documents", files={"file": (name, f"document {i} about tea".encode(), "text/plain")})
        assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 60
    while len(listed := api.get("/v1/documents").json()["data"]) < len(names):
        assert time.monotonic() < deadline, listed
        time.sleep(0.02)
    assert sorted(d["filename"] for d in listed) == sorted(names)
    # Nothing was written outside the data directory, and no upload kept its own name.
    outside = [p for p in tmp_path.parent.rglob("evil*") if tmp_path not in p.parents]
    assert outside == [] and not list(tmp_path.rglob("evil*"))
    refused(upload_raw(api, b"a\x00b.txt"), 400, "file")  # a NUL as sent (clients would escape it)
    refused(api.post("/v1/documents", files={"file": ("x" * 300 + ".txt", b"text", "text/plain")}), 400, "file")
    refused(api.post("/v1/documents", files={"file": ("evil.exe", b"MZ", "application/x-msdownload")}), 400, "file")
    refused(api.post("/v1/documents", files={"file": ("a.txt", b"t")}, data={"scope": "user:__catalog"}), 400,
            "scope")
    refused(api.post("/v1/documents", files={"file": ("a.txt", b"t")}, data={"scope": "../shared"}), 400, "scope")


def test_an_upload_without_an_extension_is_typed_by_its_content_type(api: TestClient) -> None:
    accepted = api.post("/v1/documents", files={"file": ("notes", b"plain notes about tea", "text/plain")})
    assert accepted.status_code == 202, accepted.text
    refused(api.post("/v1/documents", files={"file": ("notes", b"?", "application/octet-stream")}), 400, "file")


# --------------------------------------------------------------------------- many messages


def test_ten_thousand_chat_messages_get_a_bounded_correct_answer(api: TestClient, graph: FakeGraph) -> None:
    """Bounded by the body limit (2 MB) and, with a real engine, by the model's context (a
    400 `context_length_exceeded`); over the fake engine the answer is whole and correct."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}"}
                for i in range(10_000)]
    messages.append({"role": "user", "content": "and the last question"})
    body = chat_body(messages=messages, user="dora", max_tokens=16)
    answer = api.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"].startswith("echo:")
    sent = graph.llm.last_request
    assert sent is not None and sent.messages is not None and sent.messages[-1]["content"] == "and the last question"
    streamed = api.post("/v1/chat/completions", json={**body, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    # Only the question is written back, not the conversation.
    assert [m["text"] for m in memories_of(api, "dora")] == ["and the last question"]


# --------------------------------------------------------------------------- size, content type, method


def test_oversized_bodies_are_413s_with_or_without_content_length(client: TestClient) -> None:
    """The conftest's replica: `server.max_body_bytes` = 10 kB."""
    big = json.dumps({"user": "a", "text": "x" * 20_000}).encode()
    refused(post_raw(client, "/v1/memories", big), 413)
    refused(client.post("/v1/memories", content=iter([big[:5_000], big[5_000:]]),
                        headers={"content-type": "application/json"}), 413)  # chunked: no Content-Length
    refused(client.post("/v1/chat/completions", json=chat_body(messages=[{"role": "user", "content": "y" * 20_000}])),
            413)
    assert client.post("/v1/memories", json={"user": "a", "text": "small"}).status_code == 200
    assert_still_serves(client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "multipart/form-data; boundary=x"])
def test_json_routes_refuse_other_content_types_with_415(api: TestClient, content_type: str) -> None:
    raw = json.dumps({"user": "a", "text": "hello"})
    error = refused(post_raw(api, "/v1/memories", raw, content_type), 415)
    assert error["code"] == "unsupported_media_type" and content_type.split(";")[0] in error["message"]
    assert memories_of(api, "a") == []
    refused(api.post("/v1/memories", content=raw.encode()), 415, says="without a Content-Type")
    assert post_raw(api, "/v1/memories", raw, "application/json; charset=utf-8").status_code == 200
    assert post_raw(api, "/v1/memories", raw, "application/merge-patch+json").status_code == 200


def test_an_upload_sent_as_json_is_a_400(api: TestClient) -> None:
    refused(api.post("/v1/documents", json={"file": "text"}), 400, "file")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("TRACE", "/v1/memories", "GET, POST"),
    ("PUT", "/v1/memories/mem-1", "DELETE, GET, PATCH"),
    ("OPTIONS", "/v1/chat/completions", "POST"),
    ("DELETE", "/health", "GET"),
    ("TRACE", "/v1/memories/search", "POST"),  # a literal path is its own resource
])
def test_other_methods_are_405s_with_allow(api: TestClient, method: str, path: str, allow: str) -> None:
    response = api.request(method, path)
    refused(response, 405)
    assert response.headers["allow"] == allow
