"""OpenAI parity on the live graph with the official `openai` client: structured outputs,
logprobs and `n` from the real vLLM engine, and a refused field named in the 400.

Token budgets are small: the CPU engine makes about 17 tokens/s.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
NO_CACHE = {"memserve": {"cache": False, "memory": False}}
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_json_object_answer_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("What is the capital of France? Answer in JSON."), max_tokens=64, temperature=0,
        response_format={"type": "json_object"}, extra_body=NO_CACHE,
    )
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_json_schema_answer_is_valid(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("What is the capital of France?"), max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}},
        extra_body=NO_CACHE,
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), CITY)


def test_logprobs_with_top_alternatives(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Say hello."), max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
        extra_body=NO_CACHE,
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert reply.usage is not None and len(choice.logprobs.content) == reply.usage.completion_tokens
    for token in choice.logprobs.content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
    # Greedy: the chosen token is the most likely one.
    assert [t.token for t in choice.logprobs.content] == [t.top_logprobs[0].token for t in choice.logprobs.content]
    # The tokens spell the answer (and any stop or end-of-turn token it was cut at).
    assert "".join(t.token for t in choice.logprobs.content).startswith(choice.message.content or "")


def test_n_gives_that_many_choices(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Name a colour."), max_tokens=4, temperature=1.0, seed=7, n=2, extra_body=NO_CACHE,
    )
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert all(c.message.content for c in reply.choices)


def test_streamed_n_yields_both_indexes(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ask("Name an animal."), max_tokens=4, temperature=1.0, n=2, stream=True,
        extra_body=NO_CACHE,
    )
    content: dict[int, str] = {0: "", 1: ""}
    finished: set[int] = set()
    for chunk in stream:
        for choice in chunk.choices:
            content[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert all(content.values()) and finished == {0, 1}


def test_tools_are_refused_naming_the_field(client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=ask("Weather in Oslo?"), max_tokens=4, tools=[tool])
    assert (refused.value.param, refused.value.code) == ("tools", "unsupported_parameter")


def test_retrieve_a_model(client: openai.OpenAI) -> None:
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")
