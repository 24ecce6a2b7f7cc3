"""The request path of a completion: cache, memories, prompt, generation, write-back.

DESIGN.md's critical path: memory version -> (cache lookup || query embedding) -> memory
search -> prompt -> LLM stream. Each stage has a deadline; a stage that fails or is late
is named in `memserve.degraded` and the answer goes on without it. Caching the answer
and writing the turn back to memory happen after the last token, off the critical path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from serve_app.core.prompt import build_messages
from serve_app.core.response_cache import cache_key
from serve_app.core.retrieval import SearchFilters
from serve_app.generation import GenerationChunk, GenerationRequest, GenerationResult
from serve_app.memory_service import MemoryService
from serve_app.protocol import ChatCompletionRequest, CompletionRequest, MemoryIn, MemoryUsed, MemserveInfo
from serve_app.services import Services
from serve_app.settings import AppSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

SHARED_SCOPE = "shared"
# Only complete answers are worth replaying.
CACHEABLE_FINISH = ("stop", "length")


@dataclass
class Prepared:
    """Everything decided before the first token."""

    generation: GenerationRequest
    info: MemserveInfo
    started: float
    cache_key: str | None = None
    cached: GenerationResult | None = None
    user: str | None = None
    write_back: MemoryIn | None = None
    query_vector: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


class ChatPipeline:
    def __init__(self, settings: AppSettings, services: Services, memory: MemoryService) -> None:
        self.settings = settings
        self.services = services
        self.memory = memory
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ stages

    async def _stage(self, p: Prepared, name: str, work: Awaitable[T], timeout_s: float) -> T | None:
        """Run one stage under its deadline; on failure record it as degraded."""
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(work, timeout_s)
        except Exception as exc:  # noqa: BLE001 - any stage failure degrades, never fails
            logger.warning("stage %s degraded: %r", name, exc)
            p.info.degraded.append(name)
            return None
        finally:
            p.info.timings_ms[name] = round((time.perf_counter() - started) * 1000, 2)

    async def _cache_lookup(self, p: Prepared) -> GenerationResult | None:
        if p.cache_key is None:
            return None
        hit = await self._stage(p, "cache_lookup", self.services.cache_get(p.cache_key), self.settings.server.cache_timeout_s)
        return GenerationResult(**hit) if hit else None

    async def _prepare(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        messages: list[dict[str, str]] | None,
        query: str,
    ) -> Prepared:
        opts = request.memserve
        user = request.user
        use_memory = bool(user) and opts.memory
        server = self.settings.server
        p = Prepared(
            generation=GenerationRequest(request_id=""),
            info=MemserveInfo(),
            started=time.perf_counter(),
            user=user,
        )
        version = 0
        if use_memory:
            version = await self._stage(p, "memory_version", self.memory.version(user), server.search_timeout_s) or 0
        scope = f"user:{user}" if use_memory else SHARED_SCOPE
        if self.settings.cache.enabled and opts.cache:
            p.cache_key = cache_key(scope, version, self._cache_payload(request, messages))

        embed = (
            self._stage(p, "embed", self.services.embed([query]), server.embed_timeout_s) if use_memory else _none()
        )
        cached, vectors = await asyncio.gather(self._cache_lookup(p), embed)
        if vectors is not None:
            p.query_vector = vectors[0]
        if cached is not None:
            p.cached = cached
            p.info.cached = True
            return p

        memories: list[dict[str, Any]] = []
        if p.query_vector is not None and user:
            k = opts.k or self.settings.memory.default_k
            found = await self._stage(
                p,
                "memory_search",
                self.services.search_memories(
                    user, p.query_vector, k,
                    SearchFilters(tiers=opts.tiers, min_similarity=self.settings.memory.min_similarity),
                    query_text=query,
                ),
                server.search_timeout_s,
            )
            memories = found or []
        p.info.memories = [MemoryUsed(id=m["id"], text=m["text"], score=m["score"], tier=m["tier"]) for m in memories]

        if messages is not None:
            prompt_messages = build_messages(server.system_prompt, messages, [m["text"] for m in memories])
            p.generation = self._generation(request, messages=prompt_messages)
        else:
            prompt = _completion_prompt(request.prompt, [m["text"] for m in memories])  # type: ignore[union-attr]
            p.generation = self._generation(request, prompt=prompt)

        write_back = opts.write_back if opts.write_back is not None else self.settings.memory.write_back
        if use_memory and write_back and p.query_vector is not None:
            p.write_back = MemoryIn(
                text=query[: self.settings.memory.max_text_chars],
                tier=self.settings.memory.write_back_tier,  # type: ignore[arg-type]
                metadata={"source": "chat"},
            )
        return p

    @staticmethod
    def _generation(request: ChatCompletionRequest | CompletionRequest, **prompt: Any) -> GenerationRequest:
        return GenerationRequest(
            request_id=f"memserve-{uuid.uuid4().hex}",
            max_tokens=request.token_budget(),
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop,  # type: ignore[arg-type]
            seed=request.seed,
            **prompt,
        )

    @staticmethod
    def _cache_payload(
        request: ChatCompletionRequest | CompletionRequest, messages: list[dict[str, str]] | None
    ) -> dict[str, Any]:
        return {
            "model": request.model,
            "messages": messages,
            "prompt": getattr(request, "prompt", None),
            "sampling": [request.temperature, request.top_p, request.token_budget(), request.stop, request.seed],
            "memory": [request.memserve.memory, request.memserve.k, request.memserve.tiers],
        }

    # ------------------------------------------------------------------ public entry points

    async def prepare_chat(self, request: ChatCompletionRequest) -> Prepared:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        return await self._prepare(request, messages, request.last_user_text())

    async def prepare_completion(self, request: CompletionRequest) -> Prepared:
        return await self._prepare(request, None, request.prompt)  # type: ignore[arg-type]

    async def stream(self, p: Prepared) -> AsyncIterator[GenerationChunk]:
        """Yield the answer's chunks (from the cache or the LLM), then finish the request's
        side work. The caller must drain it; `p.info` is complete afterwards."""
        if p.cached is not None:
            for text in p.cached.chunks:
                yield GenerationChunk(text=text)
            yield GenerationChunk(
                text="", finish_reason=p.cached.finish_reason,
                prompt_tokens=p.cached.prompt_tokens, completion_tokens=p.cached.completion_tokens,
            )
            self._finish_timings(p)
            return

        chunks: list[GenerationChunk] = []
        first_token_at: float | None = None
        gen_started = time.perf_counter()
        async for chunk in self.services.generate(p.generation):
            if first_token_at is None:
                first_token_at = time.perf_counter()
                p.info.timings_ms["ttft"] = round((first_token_at - p.started) * 1000, 2)
            chunks.append(chunk)
            yield chunk
        p.info.timings_ms["generation"] = round((time.perf_counter() - gen_started) * 1000, 2)
        self._finish_timings(p)
        self._after_answer(p, GenerationResult.collect(chunks))

    @staticmethod
    def _finish_timings(p: Prepared) -> None:
        p.info.timings_ms["total"] = round((time.perf_counter() - p.started) * 1000, 2)

    def _after_answer(self, p: Prepared, result: GenerationResult) -> None:
        """Cache the answer and write the turn back, off the critical path."""
        if p.cache_key and result.finish_reason in CACHEABLE_FINISH:
            self._spawn(self.services.cache_put(p.cache_key, _as_cacheable(result)))
        if p.write_back is not None and p.user and p.query_vector is not None:
            self._spawn(self.memory.add(p.user, [p.write_back], p.query_vector.reshape(1, -1)))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def drain(self) -> None:
        """Wait for background work (tests and graceful shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


async def _none() -> None:
    return None


def _as_cacheable(result: GenerationResult) -> dict[str, Any]:
    return {
        "text": result.text, "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "chunks": result.chunks,
    }


def _completion_prompt(prompt: str, memories: list[str]) -> str:
    if not memories:
        return prompt
    notes = "\n".join(f"- {m}" for m in memories)
    return f"Relevant notes:\n{notes}\n\n{prompt}"


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed: %r", task.exception())
