"""Turn the pipeline's chunks into OpenAI response bodies and Server-Sent Events.

`usage_of` is the one place token usage is computed from what the engine reported; the
HTTP bodies, the SSE usage chunk and the WebSocket `done` event all use it. Chunks of
the `n` choices arrive interleaved, each with its `index`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from serve_app.errors import error_body
from serve_app.generation import GenerationChunk, GenerationResult
from serve_app.protocol import (
    ChatChoice,
    ChatChoiceMessage,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
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


def usage_of(results: Sequence[GenerationResult | GenerationChunk]) -> Usage:
    """OpenAI usage from the engine's counts: the prompt once, the completion tokens of
    every choice (each result or chunk is the last of one choice; none: all zero)."""
    prompt = results[0].prompt_tokens if results else 0
    completion = sum(r.completion_tokens for r in results)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def chat_response(model: str, prepared: Prepared, results: list[GenerationResult]) -> ChatCompletionResponse:
    choices = [
        ChatChoice(index=r.index, message=ChatChoiceMessage(content=r.text), finish_reason=r.finish_reason,
                   logprobs=ChatLogprobs.of(r.logprobs))
        for r in results
    ]
    return ChatCompletionResponse(model=model, choices=choices, usage=usage_of(results), memserve=prepared.info)


def completion_response(
    model: str, prepared: Prepared, results: list[GenerationResult], echo: str | None
) -> CompletionResponse:
    prefix = echo or ""
    choices = [
        CompletionChoice(index=r.index, text=prefix + r.text, finish_reason=r.finish_reason,
                         logprobs=CompletionLogprobs.of(r.logprobs, len(prefix)))
        for r in results
    ]
    return CompletionResponse(model=model, choices=choices, usage=usage_of(results), memserve=prepared.info)


def _sse(payload: str) -> str:
    return f"data: {payload}\n\n"


async def chain(first: GenerationChunk, rest: AsyncIterator[GenerationChunk]) -> AsyncIterator[GenerationChunk]:
    yield first
    async for chunk in rest:
        yield chunk


async def _events(
    chunks: AsyncIterator[GenerationChunk],
    n: int,
    delta: Callable[[GenerationChunk], str],
    final: Callable[[list[GenerationChunk]], list[str]],
) -> AsyncIterator[str]:
    """The SSE skeleton shared by chat and text completions: deltas (of any of the `n`
    choices, as they come), final events given each choice's last chunk, [DONE].
    A failure after the stream opened is reported in-band, OpenAI style."""
    last = {i: GenerationChunk(text="", index=i) for i in range(n)}
    try:
        async for step in chunks:
            last[step.index] = step
            if step.text or step.logprobs:
                yield _sse(delta(step))
    except Exception as exc:  # headers are sent: report in the stream
        logger.exception("stream failed")
        yield _sse(json.dumps(error_body(500, f"generation failed: {exc}", code="generation_failed")))
        yield DONE
        return
    for event in final([last[i] for i in sorted(last)]):
        yield _sse(event)
    yield DONE


def chat_events(
    prepared: Prepared, model: str, chunks: AsyncIterator[GenerationChunk], include_usage: bool
) -> AsyncIterator[str]:
    """Each choice opens with its role; deltas carry `index` (and `logprobs` when asked
    for); at the end each choice's finish event, the last one with the `memserve` info."""
    cid, created, n = new_id("chatcmpl"), int(time.time()), prepared.choices

    def body(choices: list[ChatChunkChoice], *, usage: Usage | None = None,
             memserve: MemserveInfo | None = None) -> str:
        chunk = ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage,
                                    memserve=memserve)
        return chunk.model_dump_json(exclude_none=True)

    def delta(step: GenerationChunk) -> str:
        return body([ChatChunkChoice(index=step.index, delta=DeltaMessage(content=step.text),
                                     logprobs=ChatLogprobs.of(step.logprobs))])

    def final(lasts: list[GenerationChunk]) -> list[str]:
        events = [body([ChatChunkChoice(index=c.index, delta=DeltaMessage(), finish_reason=c.finish_reason or "stop")],
                       memserve=prepared.info if c is lasts[-1] else None) for c in lasts]
        return events + ([body([], usage=usage_of(lasts))] if include_usage else [])

    async def with_role() -> AsyncIterator[str]:
        for i in range(n):
            yield _sse(body([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))]))
        async for event in _events(chunks, n, delta, final):
            yield event

    return with_role()


def completion_events(
    prepared: Prepared, model: str, chunks: AsyncIterator[GenerationChunk], include_usage: bool,
    echo: str | None = None,
) -> AsyncIterator[str]:
    """Text deltas with `index` (each choice starting with the echoed prompt, if asked),
    `logprobs` with running text offsets, then each choice's finish event (the last one
    with usage, if asked, and the `memserve` info)."""
    cid, created, n = new_id("cmpl"), int(time.time()), prepared.choices
    offsets = dict.fromkeys(range(n), len(echo or ""))

    def body(choice: CompletionChoice, *, usage: Usage | None = None, memserve: MemserveInfo | None = None) -> str:
        response = CompletionResponse(id=cid, created=created, model=model, choices=[choice], usage=usage,
                                      memserve=memserve)
        data = response.model_dump(mode="json", exclude_none=True)
        data["choices"][0]["finish_reason"] = choice.finish_reason  # null until the last: OpenAI's chunks have it
        return json.dumps(data, separators=(",", ":"))

    def delta(step: GenerationChunk) -> str:
        logprobs = CompletionLogprobs.of(step.logprobs, offsets[step.index])
        offsets[step.index] += sum(len(t.token) for t in step.logprobs or [])
        return body(CompletionChoice(index=step.index, text=step.text, finish_reason=None, logprobs=logprobs))

    def final(lasts: list[GenerationChunk]) -> list[str]:
        usage = usage_of(lasts) if include_usage else None
        return [body(CompletionChoice(index=c.index, text="", finish_reason=c.finish_reason or "stop"),
                     usage=usage if c is lasts[-1] else None, memserve=prepared.info if c is lasts[-1] else None)
                for c in lasts]

    async def with_echo() -> AsyncIterator[str]:
        for i in range(n if echo else 0):
            yield _sse(body(CompletionChoice(index=i, text=echo or "", finish_reason=None)))
        async for event in _events(chunks, n, delta, final):
            yield event

    return with_echo()
