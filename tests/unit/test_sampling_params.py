"""The engine's mapping of a GenerationRequest to vLLM's SamplingParams, and of vLLM's
logprobs back to ours, without starting an engine (vLLM is imported, nothing more)."""

from __future__ import annotations

import pytest

from serve_app.engine import sampling_params, token_logprobs
from serve_app.generation import GenerationRequest, TokenLogprob, TopLogprob

vllm = pytest.importorskip("vllm")


def test_every_field_maps_to_sampling_params() -> None:
    from vllm.sampling_params import RequestOutputKind

    request = GenerationRequest(
        request_id="r", prompt="x", max_tokens=99, temperature=0.7, top_p=0.9, stop=["END"], seed=11, n=3,
        presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.1, top_k=20, min_p=0.05,
        logit_bias={42: -100.0, 7: 3.0}, logprobs=2,
    )
    params = sampling_params(request, max_tokens=16)
    assert (params.max_tokens, params.n, params.output_kind) == (16, 3, RequestOutputKind.DELTA)
    assert (params.temperature, params.top_p, params.stop, params.seed) == (0.7, 0.9, ["END"], 11)
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.5, -0.5, 1.1)
    assert (params.top_k, params.min_p, params.logit_bias, params.logprobs) == (20, 0.05, {42: -100.0, 7: 3.0}, 2)
    assert params.structured_outputs is None


def test_unset_fields_keep_vllms_openai_defaults() -> None:
    params = sampling_params(GenerationRequest(request_id="r", prompt="x"), max_tokens=8)
    assert (params.temperature, params.top_p, params.top_k, params.min_p, params.n) == (1.0, 1.0, 0, 0.0, 1)
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (0.0, 0.0, 1.0)
    assert params.logprobs is None and params.logit_bias is None and params.seed is None


def test_response_formats_map_to_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    params = sampling_params(GenerationRequest(request_id="r", prompt="x", json_schema=schema), max_tokens=8)
    assert params.structured_outputs is not None and params.structured_outputs.json == schema
    params = sampling_params(GenerationRequest(request_id="r", prompt="x", json_object=True), max_tokens=8)
    assert params.structured_outputs is not None and params.structured_outputs.json_object is True
    params = sampling_params(GenerationRequest(request_id="r", prompt="x", logprobs=0), max_tokens=8)
    assert params.logprobs == 0  # the chosen token's logprob only


def test_token_logprobs_orders_alternatives_and_keeps_the_chosen_token() -> None:
    from vllm.logprobs import Logprob

    # vLLM puts the chosen token first (rank 3 here), then the top-k.
    position = {9: Logprob(-2.0, 3, " c"), 5: Logprob(-0.1, 1, " a"), 6: Logprob(-1.0, 2, None)}
    out = token_logprobs([9], [position], 2, decode=lambda token_id: f"<{token_id}>")
    assert out == [TokenLogprob(" c", -2.0, [TopLogprob(" a", -0.1), TopLogprob("<6>", -1.0)])]
    none = token_logprobs([4], [None], 0, decode=lambda token_id: "x")
    assert none == [TokenLogprob("x", -9999.0, [])]
