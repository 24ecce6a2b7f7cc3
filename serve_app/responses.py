"""Turn the pipeline's chunks into OpenAI response bodies and Server-Sent Events.

`usage_of` is the one place token usage is computed from what the engine reported; the
HTTP bodies, the SSE usage chunk and the WebSocket `done` event all use it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from serve_app.errors import error_body
from serve_app.generation import GenerationChunk, GenerationResult
from serve_app.protocol import (
    ChatChoice,
    ChatChoiceMessage,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
    MemserveInfo,
    Usage,
    new_id,
)

if TYPE_CHECKING:  # a type only: the pipeline need not be importable to build a response
    from serve_app.chat.pipeline import Prepared

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def usage_of(result: GenerationResult | GenerationChunk | None) -> Usage:
    """OpenAI usage from the engine's counts (all zero when nothing was generated)."""
    if result is None:
        return Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


def chat_response(model: str, prepared: Prepared, result: GenerationResult) -> ChatCompletionResponse:
    return ChatCompletionResponse(
        model=model,
        choices=[ChatChoice(message=ChatChoiceMessage(content=result.text), finish_reason=result.finish_reason)],
        usage=usage_of(result),
        memserve=prepared.info,
    )


def completion_response(
    model: str, prepared: Prepared, result: GenerationResult, echo: str | None
) -> CompletionResponse:
    text = (echo or "") + result.text
    return CompletionResponse(
        model=model,
        choices=[CompletionChoice(text=text, finish_reason=result.finish_reason)],
        usage=usage_of(result),
        memserve=prepared.info,
    )


def _sse(payload: str) -> str:
    return f"data: {payload}\n\n"


async def chain(first: GenerationChunk, rest: AsyncIterator[GenerationChunk]) -> AsyncIterator[GenerationChunk]:
    yield first
    async for chunk in rest:
        yield chunk


async def _events(
    chunks: AsyncIterator[GenerationChunk],
    delta: Callable[[str], str],
    final: Callable[[GenerationChunk], list[str]],
) -> AsyncIterator[str]:
    """The SSE skeleton shared by chat and text completions: deltas, final events, [DONE].
    A failure after the stream opened is reported in-band, OpenAI style."""
    last = GenerationChunk(text="")
    try:
        async for step in chunks:
            last = step
            if step.text:
                yield _sse(delta(step.text))
    except Exception as exc:  # headers are sent: report in the stream
        logger.exception("stream failed")
        yield _sse(json.dumps(error_body(500, f"generation failed: {exc}", code="generation_failed")))
        yield DONE
        return
    for event in final(last):
        yield _sse(event)
    yield DONE


def chat_events(
    prepared: Prepared, model: str, chunks: AsyncIterator[GenerationChunk], include_usage: bool
) -> AsyncIterator[str]:
    cid, created = new_id("chatcmpl"), int(time.time())

    def body(delta: DeltaMessage | None, finish: str | None = None, *, usage: Usage | None = None,
             memserve: MemserveInfo | None = None) -> str:
        choices = [] if delta is None else [ChatChunkChoice(delta=delta, finish_reason=finish)]
        chunk = ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage,
                                    memserve=memserve)
        return chunk.model_dump_json(exclude_none=True)

    def final(last: GenerationChunk) -> list[str]:
        events = [body(DeltaMessage(), last.finish_reason or "stop", memserve=prepared.info)]
        return events + ([body(None, usage=usage_of(last))] if include_usage else [])

    async def with_role() -> AsyncIterator[str]:
        yield _sse(body(DeltaMessage(role="assistant", content="")))
        async for event in _events(chunks, lambda text: body(DeltaMessage(content=text)), final):
            yield event

    return with_role()


def completion_events(
    prepared: Prepared, model: str, chunks: AsyncIterator[GenerationChunk], include_usage: bool
) -> AsyncIterator[str]:
    cid, created = new_id("cmpl"), int(time.time())

    def body(text: str, finish: str | None = None, *, usage: Usage | None = None,
             memserve: MemserveInfo | None = None) -> str:
        choice = CompletionChoice(text=text, finish_reason=finish)
        response = CompletionResponse(id=cid, created=created, model=model, choices=[choice], usage=usage,
                                      memserve=memserve)
        return response.model_dump_json(exclude_none=True)

    def final(last: GenerationChunk) -> list[str]:
        usage = usage_of(last) if include_usage else None
        return [body("", last.finish_reason or "stop", usage=usage, memserve=prepared.info)]

    return _events(chunks, body, final)
