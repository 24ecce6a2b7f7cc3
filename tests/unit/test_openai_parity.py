"""No OpenAI field is silently ignored: each one reaches the engine's request, is refused
with a 400 naming it, or is on the documented ignore-list; logprobs and `n` come back in
OpenAI's shapes, over HTTP (whole and streamed) and the WebSocket."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeGraph

MODEL = "smollm2-135m-instruct"
HI = [{"role": "user", "content": "hi"}]


def chat_body(**extra: object) -> dict[str, Any]:
    return {"model": MODEL, "messages": HI, "memserve": {"cache": False}, **extra}


def completion_body(**extra: object) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Once upon", **extra}


def error_of(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error") and error["message"]
    return error


def sse_events(client: TestClient, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


# --------------------------------------------------------------------------- fields reach the engine


def test_every_chat_sampling_field_reaches_the_generation_request(client: TestClient, graph: FakeGraph) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    body = chat_body(
        temperature=0.5, top_p=0.9, max_completion_tokens=7, stop="END", seed=3, presence_penalty=0.5,
        frequency_penalty=-0.5, repetition_penalty=1.2, top_k=5, min_p=0.1, logit_bias={"42": -100, "7": 5},
        logprobs=True, top_logprobs=2, n=2,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    sent = graph.llm.last_request
    assert sent is not None
    assert (sent.temperature, sent.top_p, sent.max_tokens, sent.stop, sent.seed) == (0.5, 0.9, 7, ["END"], 3)
    assert (sent.presence_penalty, sent.frequency_penalty, sent.repetition_penalty) == (0.5, -0.5, 1.2)
    assert (sent.top_k, sent.min_p, sent.logit_bias) == (5, 0.1, {42: -100.0, 7: 5.0})
    assert (sent.logprobs, sent.n, sent.json_schema, sent.json_object) == (2, 2, schema, False)


def test_json_object_logprobs_without_top_and_completion_fields(client: TestClient, graph: FakeGraph) -> None:
    client.post("/v1/chat/completions", json=chat_body(response_format={"type": "json_object"}, logprobs=True))
    sent = graph.llm.last_request
    assert sent is not None and sent.json_object and sent.json_schema is None and sent.logprobs == 0
    client.post("/v1/chat/completions", json=chat_body(response_format={"type": "text"}, logprobs=False))
    sent = graph.llm.last_request
    assert sent is not None and not sent.json_object and sent.json_schema is None and sent.logprobs is None
    body = completion_body(logprobs=3, n=3, presence_penalty=1, logit_bias={"9": 1}, stop=["x", "y"], max_tokens=5)
    assert client.post("/v1/completions", json=body).status_code == 200
    sent = graph.llm.last_request
    assert sent is not None and (sent.logprobs, sent.n, sent.presence_penalty) == (3, 3, 1.0)
    assert (sent.logit_bias, sent.stop, sent.max_tokens) == ({9: 1.0}, ["x", "y"], 5)


# --------------------------------------------------------------------------- refused, unknown, ignored


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", chat_body(tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
        ("/v1/chat/completions", chat_body(tool_choice="auto"), "tool_choice"),
        ("/v1/chat/completions", chat_body(tool_choice={"type": "function", "function": {"name": "f"}}),
         "tool_choice"),
        ("/v1/chat/completions", chat_body(functions=[{"name": "f"}]), "functions"),
        ("/v1/chat/completions", chat_body(function_call="auto"), "function_call"),
        ("/v1/chat/completions", chat_body(audio={"voice": "alloy", "format": "wav"}), "audio"),
        ("/v1/chat/completions", chat_body(modalities=["text", "audio"]), "modalities"),
        ("/v1/chat/completions", chat_body(prediction={"type": "content", "content": "x"}), "prediction"),
        ("/v1/chat/completions", chat_body(reasoning_effort="high"), "reasoning_effort"),
        ("/v1/chat/completions", chat_body(verbosity="low"), "verbosity"),
        ("/v1/chat/completions", chat_body(web_search_options={}), "web_search_options"),
        ("/v1/chat/completions", chat_body(messages=[*HI, {"role": "assistant", "tool_calls": [{"id": "1"}]}]),
         "messages.1.tool_calls"),
        ("/v1/completions", completion_body(suffix="The end."), "suffix"),
        ("/v1/completions", completion_body(best_of=3), "best_of"),
        ("/v1/completions", completion_body(echo=True, logprobs=1), "logprobs"),
    ],
)
def test_unsupported_fields_get_400_naming_them(client: TestClient, path: str, body: dict[str, Any],
                                                 param: str) -> None:
    error = error_of(client.post(path, json=body))
    assert (error["param"], error["code"]) == (param, "unsupported_parameter")


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", chat_body(temperatur=0.2), "temperatur"),
        ("/v1/chat/completions", chat_body(ignore_eos=True), "ignore_eos"),
        ("/v1/chat/completions", chat_body(memserve={"k": 3, "topk": 3}), "memserve.topk"),
        ("/v1/chat/completions", chat_body(messages=[{"role": "user", "content": "hi", "lang": "en"}]),
         "messages.0.lang"),
        ("/v1/chat/completions", chat_body(stream=True, stream_options={"include_usage": True, "x": 1}),
         "stream_options.x"),
        ("/v1/chat/completions", chat_body(response_format={"type": "json_schema", "json_schema": {
            "name": "n", "schema": {}, "extra": 1}}), "response_format.json_schema.extra"),
        ("/v1/completions", completion_body(store=True), "store"),
        ("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "x", "truncate": True}, "truncate"),
    ],
)
def test_unknown_fields_get_400_naming_them(client: TestClient, path: str, body: dict[str, Any], param: str) -> None:
    error = error_of(client.post(path, json=body))
    assert (error["param"], error["code"]) == (param, "unknown_parameter")
    assert param in error["message"]


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [], "tool_choice": "none", "parallel_tool_calls": False},
        {"tools": None, "tool_choice": None, "functions": [], "function_call": "none"},
        {"parallel_tool_calls": True, "modalities": ["text"], "audio": None, "prediction": None},
        {"store": True, "metadata": {"app": "x"}, "service_tier": "auto", "safety_identifier": "h",
         "prompt_cache_key": "k"},
        {"messages": [{"role": "user", "content": "hi", "name": "ann"},
                      {"role": "assistant", "content": "yo", "tool_calls": None, "refusal": None},
                      {"role": "user", "content": "hi again"}]},
        {"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}},
    ],
)
def test_no_op_and_ignored_values_are_accepted(client: TestClient, extra: dict[str, Any]) -> None:
    assert client.post("/v1/chat/completions", json=chat_body(**extra)).status_code == 200


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", chat_body(top_logprobs=2), "top_logprobs"),
        ("/v1/chat/completions", chat_body(logprobs=True, top_logprobs=21), "top_logprobs"),
        ("/v1/chat/completions", chat_body(presence_penalty=2.5), "presence_penalty"),
        ("/v1/chat/completions", chat_body(frequency_penalty=-3), "frequency_penalty"),
        ("/v1/chat/completions", chat_body(repetition_penalty=0), "repetition_penalty"),
        ("/v1/chat/completions", chat_body(min_p=1.5), "min_p"),
        ("/v1/chat/completions", chat_body(top_k=-2), "top_k"),
        ("/v1/chat/completions", chat_body(logit_bias={"dog": 1}), "logit_bias"),
        ("/v1/chat/completions", chat_body(logit_bias={"5": 101}), "logit_bias"),
        ("/v1/chat/completions", chat_body(stop=["ok", ""]), "stop"),
        ("/v1/chat/completions", chat_body(stream_options={"include_usage": True}), "stream_options"),
        ("/v1/chat/completions", chat_body(response_format={"type": "yaml"}), "response_format.type"),
        ("/v1/chat/completions", chat_body(response_format={"type": "json_schema"}), "response_format.json_schema"),
        ("/v1/chat/completions", chat_body(response_format={"type": "json_schema", "json_schema": {"name": "n"}}),
         "response_format.json_schema.schema"),
        ("/v1/chat/completions", chat_body(response_format={"type": "json_schema", "json_schema": {
            "name": "n", "schema": {"type": "banana"}}}), "response_format.json_schema.schema"),
        ("/v1/completions", completion_body(logprobs=6), "logprobs"),
        ("/v1/completions", completion_body(n=9), "n"),
    ],
)
def test_bad_values_get_400_naming_the_field(client: TestClient, path: str, body: dict[str, Any], param: str) -> None:
    error = error_of(client.post(path, json=body))
    assert (error["param"], error["code"]) == (param, "invalid_value")


def test_engine_refusal_is_a_400_whole_or_streamed(client: TestClient) -> None:
    for stream in (False, True):
        error = error_of(client.post("/v1/chat/completions", json=chat_body(logit_bias={"99999": 1}, stream=stream)))
        assert (error["param"], error["code"]) == ("logit_bias", "invalid_value")


def test_embedding_dimensions_only_as_the_models_own(client: TestClient) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": "x"}
    assert client.post("/v1/embeddings", json={**body, "dimensions": 64}).status_code == 200
    error = error_of(client.post("/v1/embeddings", json={**body, "dimensions": 32}))
    assert (error["param"], error["code"]) == ("dimensions", "unsupported_parameter")


def test_retrieve_one_model(client: TestClient) -> None:
    card = client.get(f"/v1/models/{MODEL}").json()
    assert (card["id"], card["object"]) == (MODEL, "model")
    assert client.get("/v1/models/all-MiniLM-L6-v2").status_code == 200
    error = error_of(client.get("/v1/models/gpt-9"), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")


# --------------------------------------------------------------------------- n and logprobs in responses


def test_n_choices_whole_and_streamed(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json=chat_body(n=3)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 3 and body["usage"]["prompt_tokens"] == 7
    events = sse_events(client, "/v1/chat/completions",
                        chat_body(n=2, stream=True, stream_options={"include_usage": True}))
    choices = [c for e in events for c in e["choices"]]
    assert {c["index"] for c in choices if c["delta"].get("role")} == {0, 1}
    assert {c["index"] for c in choices if c["delta"].get("content")} == {0, 1}
    assert {c["index"]: c["finish_reason"] for c in choices if c.get("finish_reason")} == {0: "stop", 1: "stop"}
    assert events[-1]["usage"]["completion_tokens"] == 2
    completions = client.post("/v1/completions", json=completion_body(n=2, echo=True)).json()["choices"]
    assert [(c["index"], c["text"]) for c in completions] == [(0, "Once uponecho:"), (1, "Once uponecho:")]


def test_chat_logprobs_whole_and_streamed(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json=chat_body(logprobs=True, top_logprobs=2)).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert content[0]["token"] == "echo:" and content[0]["bytes"] == list(b"echo:")
    assert [t["logprob"] for t in content[0]["top_logprobs"]] == [-0.25, -0.5]
    events = sse_events(client, "/v1/chat/completions", chat_body(logprobs=True, stream=True))
    streamed = [t for e in events for c in e["choices"] for t in (c.get("logprobs") or {}).get("content", [])]
    assert [t["token"] for t in streamed] == ["echo:"] and streamed[0]["top_logprobs"] == []
    plain = client.post("/v1/chat/completions", json=chat_body()).json()
    assert plain["choices"][0]["logprobs"] is None


def test_completion_logprobs_whole_and_streamed(client: TestClient) -> None:
    logprobs = client.post("/v1/completions", json=completion_body(logprobs=2)).json()["choices"][0]["logprobs"]
    assert logprobs == {"tokens": ["echo:"], "token_logprobs": [-0.25], "top_logprobs": [{"echo:": -0.25,
                        "echo:~": -0.5}], "text_offset": [0]}
    events = sse_events(client, "/v1/completions", completion_body(logprobs=0, stream=True))
    streamed = [c["logprobs"] for e in events for c in e["choices"] if c.get("logprobs")]
    assert streamed == [{"tokens": ["echo:"], "token_logprobs": [-0.25], "top_logprobs": [{"echo:": -0.25}],
                         "text_offset": [0]}]
    echoed = sse_events(client, "/v1/completions", completion_body(stream=True, echo=True))
    assert "".join(c["text"] for e in echoed for c in e["choices"]) == "Once uponecho:"


# --------------------------------------------------------------------------- cache


def test_cache_separates_fields_and_skips_unreplayable_answers(client: TestClient, graph: FakeGraph) -> None:
    def ask(**extra: object) -> bool:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "cache me"}], "temperature": 0, **extra}
        response = client.post("/v1/chat/completions", json=body).json()
        return bool(response["memserve"]["cached"])

    assert not ask() and ask()
    assert not ask(presence_penalty=1.0) and ask(presence_penalty=1.0)
    assert not ask(response_format={"type": "json_object"}) and ask(response_format={"type": "json_object"})
    assert not ask(logit_bias={"5": 1}) and not ask(logit_bias={"6": 1})
    before = graph.llm.generations
    assert not ask(n=2) and not ask(n=2)
    assert not ask(logprobs=True) and not ask(logprobs=True)
    assert graph.llm.generations == before + 4


# --------------------------------------------------------------------------- WebSocket


def test_websocket_takes_the_same_fields(client: TestClient) -> None:
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(chat_body(tools=[{"type": "function", "function": {"name": "f"}}]))
        error = ws.receive_json()["error"]
        assert (error["param"], error["code"]) == ("tools", "unsupported_parameter")
        ws.send_json(chat_body(memserve={"kk": 1}))
        error = ws.receive_json()["error"]
        assert (error["param"], error["code"]) == ("memserve.kk", "unknown_parameter")
        ws.send_json(chat_body(n=2, logprobs=True, top_logprobs=1))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "done":
            events.append(ws.receive_json())
    tokens = events[:-1]
    assert {e["index"] for e in tokens} == {0, 1}
    assert all(len(e["logprobs"]["content"][0]["top_logprobs"]) == 1 for e in tokens)
    done = events[-1]
    assert done["finish_reasons"] == ["stop", "stop"] and done["usage"]["completion_tokens"] == 2
