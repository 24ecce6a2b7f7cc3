"""The request path of a completion: named stages, so independent work runs concurrently.

    snapshot -> keys -> lookup -> context -> (follow) -> prompt -> LLM stream
    after the last token: cache the answer, write the turn back, record metrics

The stages and their typed results are in `stages.py`; what a request uses is its `Plan`;
its cache key comes from `cache_policy.py`. Every stage has a deadline; a stage that fails
or is late is named in `memserve.degraded` and the answer goes on without it. Work that
does not feed the prompt (intent and quick replies without a catalog) starts with the
first token, so it never competes with the prefill for the CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.chat.cache_policy import CacheKeys, cache_keys, replayable
from serve_app.chat.plan import ChatInput, Plan
from serve_app.chat.prompting import generation_request, write_back_item
from serve_app.chat.stages import ChatStages, Context, Snapshot
from serve_app.chat.trace import Trace
from serve_app.clients import CacheClient, GeneratorClient
from serve_app.clients.endpoint import StageUnavailable
from serve_app.core.budget import Trimmed
from serve_app.core.metrics import Metrics
from serve_app.core.response_cache import CacheHit
from serve_app.decisions import ProductChoice
from serve_app.errors import APIError, unwrap_remote
from serve_app.generation import GenerationChunk, GenerationRequest, GenerationResult, InvalidGenerationRequest
from serve_app.memory_service import MemoryService
from serve_app.protocol import (
    CacheKind,
    ChatCompletionRequest,
    CompletionRequest,
    MemoryIn,
    MemoryUsed,
    MemserveInfo,
)
from serve_app.protocol.openai import TrimmedOut

logger = logging.getLogger(__name__)

# Only complete answers are worth replaying.
CACHEABLE_FINISH = ("stop", "length")


@dataclass
class Prepared:
    """Everything decided before the first token: either a cached answer or the
    generation request, plus what to do once the answer is out. `info` is complete once
    the stream is drained."""

    info: MemserveInfo
    trace: Trace
    cached: GenerationResult | None = None
    generation: GenerationRequest | None = None
    keys: CacheKeys | None = None
    leader: bool = False  # this request holds the single-flight claim of its key
    user: str | None = None
    query: str = ""
    query_vector: np.ndarray | None = None
    write_back: MemoryIn | None = None
    annotate: bool = False  # decide intent and quick replies beside generation

    def __post_init__(self) -> None:
        # The response reports the trace as it stands: one record, not a copy to keep in step.
        self.info.timings_ms, self.info.degraded = self.trace.timings_ms, self.trace.degraded

    @property
    def choices(self) -> int:
        """How many choices the answer has (a cached answer has one)."""
        return self.generation.n if self.generation is not None else 1

    @classmethod
    def from_cache(cls, trace: Trace, hit: CacheHit, kind: CacheKind) -> Prepared:
        info = MemserveInfo(cached=True, cache=kind, cache_similarity=hit.similarity)
        return cls(info=info, trace=trace, cached=GenerationResult(**hit.value))


class ChatPipeline:
    def __init__(
        self, stages: ChatStages, generator: GeneratorClient, cache: CacheClient, memory: MemoryService,
        metrics: Metrics,
    ) -> None:
        self.stages = stages
        self.settings = stages.settings
        self.generator = generator
        self.cache = cache
        self.memory = memory
        self.metrics = metrics
        self._background: set[asyncio.Task[Any]] = set()

    async def prepare_chat(self, request: ChatCompletionRequest) -> Prepared:
        return await self._prepare(ChatInput.of_chat(request))

    async def prepare_completion(self, request: CompletionRequest) -> Prepared:
        return await self._prepare(ChatInput.of_completion(request))

    async def _prepare(self, chat: ChatInput) -> Prepared:
        plan, trace = Plan.of(self.settings, chat), Trace()
        for tier in plan.tiers or []:
            self.memory.tiers.check(tier)  # an unknown tier is the caller's mistake: 400
        snapshot = await self.stages.snapshot(plan, trace)
        cached = plan.cache and replayable(chat.request)
        keys = cache_keys(chat, plan, snapshot.memory_version, snapshot.source_versions()) if cached else None
        lookup = await self.stages.lookup(plan, trace, keys, chat.query, self._needs_vector(plan, snapshot, keys))
        if lookup.hit is not None:
            return Prepared.from_cache(trace, lookup.hit, "exact")
        context = await self.stages.context(plan, trace, keys, chat.query, lookup.vector, snapshot)
        if context.semantic is not None:
            if context.role == "leader" and keys is not None:
                self._spawn(self.cache.release(keys.key))
            return Prepared.from_cache(trace, context.semantic, "semantic")
        if context.role == "follower" and keys is not None:
            hit = await self.stages.follow(trace, keys)
            if hit is not None:
                return Prepared.from_cache(trace, hit, "single_flight")
        prepared = self._to_generate(chat, plan, trace, keys, lookup.vector, context, snapshot)
        trace.record("prepare", trace.started)
        return prepared

    def _needs_vector(self, plan: Plan, snapshot: Snapshot, keys: CacheKeys | None) -> bool:
        semantic = keys is not None and self.settings.cache.semantic
        return plan.memory or snapshot.has_products or not snapshot.knowledge.empty or semantic

    def _to_generate(self, chat: ChatInput, plan: Plan, trace: Trace, keys: CacheKeys | None,
                     vector: np.ndarray | None, context: Context, snapshot: Snapshot) -> Prepared:
        choice = context.products
        info = MemserveInfo(
            memories=[MemoryUsed.of(m) for m in context.memories], sources=context.sources,
            products=choice.products if choice else [], quick_replies=choice.quick_replies if choice else [],
            intent=choice.intent if choice else None,
        )
        return Prepared(
            info=info, trace=trace, generation=generation_request(self.settings, chat, context),
            keys=keys, leader=context.role == "leader", user=plan.user, query=chat.query, query_vector=vector,
            write_back=write_back_item(self.settings.memory, chat.query) if plan.write_back and vector is not None
            else None,
            annotate=plan.decisions and not snapshot.has_products,
        )

    async def stream(self, p: Prepared) -> AsyncIterator[GenerationChunk]:
        """Yield the answer's chunks (from the cache or the LLM), then finish the request's
        side work. `p.info` is complete once the stream is drained."""
        if p.cached is not None:
            for chunk in _replay(p.cached):
                yield chunk
            self._finish(p)
            return
        assert p.generation is not None
        chunks: list[GenerationChunk] = []
        side: asyncio.Future[ProductChoice | None] | None = None
        stored = False
        try:
            started = time.perf_counter()
            chunks_of = _refusals_as_400(self.generator.stream(p.generation))
            async for chunk in _first_within(chunks_of, self.settings.server.generation_start_timeout_s):
                if chunk.trimmed is not None:
                    _note_trimmed(p.info, chunk.trimmed)
                if not chunks:
                    p.trace.since_start("ttft")
                    side = asyncio.ensure_future(self.stages.annotate(p.trace, p.query, p.query_vector)) \
                        if p.annotate else None
                chunks.append(chunk)
                yield chunk
            p.trace.record("generation", started)
            stored = self._after_answer(p, GenerationResult.collect(chunks))
            if side is not None:
                _apply_choice(p.info, await side)  # usually done: decoding takes far longer
            self._finish(p)
        finally:
            if side is not None:
                side.cancel()
            if p.leader and not stored and p.keys is not None:
                self._spawn(self.cache.release(p.keys.key))  # followers generate themselves

    def _finish(self, p: Prepared) -> None:
        p.trace.since_start("total")
        self.metrics.observe_all(p.info.timings_ms, prefix="stage.")
        self.metrics.observe("request.cached" if p.info.cached else "request.generated", p.info.timings_ms["total"])

    def _after_answer(self, p: Prepared, result: GenerationResult) -> bool:
        """Cache the answer and write the turn back, off the critical path. True if the
        answer goes to the cache (which also releases the single-flight claim)."""
        stored = False
        if p.keys is not None and result.finish_reason in CACHEABLE_FINISH:
            self._spawn(self.cache.put(p.keys.key, result.cacheable(), p.keys.group, p.query_vector))
            stored = True
        if p.write_back is not None and p.user and p.query_vector is not None:
            self._spawn(self.memory.add(p.user, [p.write_back], p.query_vector.reshape(1, -1)))
        return stored

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def drain(self) -> None:
        """Wait for background work (tests and graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


async def _refusals_as_400(chunks: AsyncIterator[GenerationChunk]) -> AsyncGenerator[GenerationChunk, None]:
    """The engine refusing a sampling parameter (checked where the vocabulary and limits
    are known) is the caller's 400 naming it, not a server error. It arrives before the
    first chunk, so a streamed request still gets a proper 4xx."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:
        refusal = unwrap_remote(exc)
        if isinstance(refusal, InvalidGenerationRequest):
            raise APIError(400, str(refusal), refusal.param, "invalid_value") from None
        raise


def _replay(cached: GenerationResult) -> list[GenerationChunk]:
    chunks = [GenerationChunk(text=text) for text in cached.chunks]
    return [*chunks, GenerationChunk(text="", finish_reason=cached.finish_reason,
                                     prompt_tokens=cached.prompt_tokens, completion_tokens=cached.completion_tokens)]


async def _first_within(
        chunks: AsyncGenerator[GenerationChunk, None], seconds: float) -> AsyncIterator[GenerationChunk]:
    """The chunks, if the first one comes within `seconds`; else a 503 `unavailable`."""
    try:
        first = await asyncio.wait_for(anext(chunks), seconds)
    except StopAsyncIteration:
        return
    except TimeoutError:
        await chunks.aclose()  # cancels the call to the LLM
        raise StageUnavailable(f"the LLM did not start answering within {seconds:g} s", overloaded=False,
                               retry_after_s=max(1.0, seconds / 4)) from None
    yield first
    async for chunk in chunks:
        yield chunk


def _note_trimmed(info: MemserveInfo, trimmed: Trimmed) -> None:
    """The response lists only what the prompt held (each list lost its tail), and says
    how much was left out."""
    info.trimmed = TrimmedOut(memories=trimmed.memories, knowledge=trimmed.knowledge, products=trimmed.products)
    info.memories = info.memories[: len(info.memories) - trimmed.memories]
    info.sources = info.sources[: len(info.sources) - trimmed.knowledge]
    info.products = info.products[: len(info.products) - trimmed.products]


def _apply_choice(info: MemserveInfo, choice: ProductChoice | None) -> None:
    if choice is not None:
        info.intent, info.quick_replies = choice.intent, choice.quick_replies


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed: %r", task.exception())
