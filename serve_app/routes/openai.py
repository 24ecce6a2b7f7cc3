"""The OpenAI-compatible endpoints: chat and text completions, embeddings, models.

Stock OpenAI clients call these unchanged; memory, products and sources ride along in
the `memserve` object the pipeline fills in. Every route is a `StrictRoute`: a field a
request may not carry is a 400 naming it (`unknown_parameter`, `unsupported_parameter`).
`user` names a user of the caller's tenant: the pipeline gets the stored name
(`rt.namespace.scoped`), and runs with the tenant's cache, knowledge and catalog.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, cast

import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from serve_app.chat.pipeline import Prepared
from serve_app.errors import APIError
from serve_app.generation import GenerationResult
from serve_app.openapi import event_stream
from serve_app.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
)
from serve_app.responses import chain, chat_events, chat_response, completion_events, completion_response
from serve_app.routes.validation import StrictRoute
from serve_app.runtime import Runtime, RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["openai"], route_class=StrictRoute)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _model_cards(rt: Runtime) -> list[ModelCard]:
    names = [rt.settings.llm.served_model_name, rt.settings.embedder.served_model_name]
    return [ModelCard(id=n, created=rt.started) for n in names]


@router.get("/v1/models", response_model=ModelList)
async def list_models(rt: RuntimeDep) -> ModelList:
    return ModelList(data=_model_cards(rt))


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, rt: RuntimeDep) -> ModelCard:
    for card in _model_cards(rt):
        if card.id == model_id:
            return card
    raise APIError(404, f"The model `{model_id}` does not exist.", "model", "model_not_found")


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses=event_stream(ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, rt: RuntimeDep) -> Any:
    rt.check_model(body.model)
    _check_budget(rt, max_tokens=body.max_tokens, max_completion_tokens=body.max_completion_tokens)
    return await _answer(rt, await rt.pipeline.prepare_chat(rt.namespace.scoped(body)), body)


@router.post("/v1/completions", response_model=CompletionResponse, responses=event_stream(CompletionResponse))
async def completions(body: CompletionRequest, rt: RuntimeDep) -> Any:
    rt.check_model(body.model)
    _check_budget(rt, max_tokens=body.max_tokens)
    echo = cast(str, body.prompt) if body.echo else None  # the validator made it one str
    return await _answer(rt, await rt.pipeline.prepare_completion(rt.namespace.scoped(body)), body, echo)


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def embeddings(body: EmbeddingRequest, rt: RuntimeDep) -> EmbeddingResponse:
    rt.check_model(body.model, kind="embedding")
    texts = cast(list[str], body.input)  # the validator made it a list
    vectors = await rt.clients.embedder.embed(texts)
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise APIError(400, f"dimensions: {body.model} gives {vectors.shape[1]}-dimensional embeddings and cannot "
                            "shorten them", "dimensions", "unsupported_parameter")
    tokens = await rt.clients.embedder.count_tokens(texts)
    data = [EmbeddingData(index=i, embedding=_encode_vector(v, body.encoding_format)) for i, v in enumerate(vectors)]
    usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    return EmbeddingResponse(data=data, model=body.model, usage=usage)


def _check_budget(rt: Runtime, **budgets: int | None) -> None:
    """No answer is longer than the model's context: a bigger budget is a 400 up front (the
    schema's `maximum`), whichever of the two fields says it."""
    limit = rt.settings.llm.max_model_len
    for field, budget in budgets.items():
        if budget is not None and budget > limit:
            raise APIError(400, f"{field}: {budget} is more than the model's context ({limit} tokens)", field,
                           "context_length_exceeded")


async def _answer(
    rt: Runtime, prepared: Prepared, body: ChatCompletionRequest | CompletionRequest, echo: str | None = None
) -> Any:
    """A whole response body, or an SSE stream when the request asked for one."""
    model = rt.settings.llm.served_model_name
    chunks = rt.pipeline.stream(prepared)
    is_chat = isinstance(body, ChatCompletionRequest)
    if not body.stream:
        results = GenerationResult.collect_all([c async for c in chunks])
        if is_chat:
            return chat_response(model, prepared, results)
        return completion_response(model, prepared, results, echo)
    # Pull the first chunk before answering 200, so a request the engine refuses
    # (e.g. too long for the context) gets a proper 4xx instead of a broken stream.
    first = await anext(chunks)
    if is_chat:
        events = chat_events(prepared, model, chain(first, chunks), body.include_usage())
    else:
        events = completion_events(prepared, model, chain(first, chunks), body.include_usage(), echo)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
    return [float(x) for x in vector]
