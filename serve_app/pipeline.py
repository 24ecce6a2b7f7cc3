"""The request path of a completion, staged so that independent work runs concurrently.

    0  memory version || knowledge registry || catalog snapshot (local store reads; the
       cache key depends on them)
    1  exact cache lookup        || query embedding
    2  semantic cache lookup     || memory search (user's shard) || product decision + catalog search
       (stage 2 also claims the key: the first miss generates, identical concurrent
    3  misses wait for its answer: single-flight)
    4  prompt -> LLM stream
       after the last token: cache the answer, write the turn back, record metrics

Every stage has a deadline; a stage that fails or is late is named in
`memserve.degraded` and the answer goes on without it. With `server.fanout: false` (or
`memserve.fanout: false`) the stages of a step run one after another instead, which is
what `benchmarks/bench_fanout.py` compares against.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from serve_app.catalog import CatalogService, CatalogSnapshot
from serve_app.core.decision import Decision, decide, quick_replies
from serve_app.core.metrics import Metrics
from serve_app.core.prompt import build_messages, knowledge_block, product_block
from serve_app.core.response_cache import CacheHit, cache_key, digest
from serve_app.core.retrieval import SearchFilters
from serve_app.knowledge import KnowledgeService
from serve_app.generation import GenerationChunk, GenerationRequest, GenerationResult
from serve_app.memory_service import MemoryService
from serve_app.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    MemoryIn,
    MemoryUsed,
    MemserveInfo,
    ProductOut,
    SourceOut,
)
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
    cache_group: str | None = None
    cached: GenerationResult | None = None
    leader: bool = False  # this request holds the single-flight claim of its key
    user: str | None = None
    write_back: MemoryIn | None = None
    query_vector: np.ndarray | None = None
    # Work that fills `info` but not the prompt: started once the first token is out, so it
    # never competes with the prefill for the CPU.
    side_work: list[Callable[[], Coroutine[Any, Any, Any]]] = field(default_factory=list)


async def _none() -> None:
    return None


async def run_stages(fanout: bool, *stages: Coroutine[Any, Any, Any]) -> list[Any]:
    """Concurrently (fan-out) or one after another; same results either way."""
    if fanout:
        return list(await asyncio.gather(*stages))
    return [await stage for stage in stages]


class ChatPipeline:
    def __init__(
        self, settings: AppSettings, services: Services, memory: MemoryService, catalog: CatalogService,
        metrics: Metrics | None = None, knowledge: KnowledgeService | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.memory = memory
        self.catalog = catalog
        self.knowledge = knowledge
        self.metrics = metrics or Metrics()
        self._prototypes: dict[str, np.ndarray] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ stage helpers

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

    async def _cache_get(self, p: Prepared, name: str, **semantic: Any) -> CacheHit | None:
        if p.cache_key is None:
            return None
        return await self._stage(p, name, self.services.cache_get(p.cache_key, **semantic),
                                 self.settings.server.cache_timeout_s)

    async def _semantic_lookup(self, p: Prepared) -> CacheHit | None:
        if not self.settings.cache.semantic or p.query_vector is None or p.cache_group is None:
            return None
        return await self._cache_get(p, "semantic_cache", group=p.cache_group, vector=p.query_vector,
                                     min_similarity=self.settings.cache.semantic_threshold)

    async def _memory_search(self, p: Prepared, user: str, k: int, tiers: list[str] | None, query: str) -> list[dict[str, Any]]:
        if p.query_vector is None:
            return []
        filters = SearchFilters(tiers=tiers, min_similarity=self.settings.memory.min_similarity)
        found = await self._stage(
            p, "memory_search", self.services.search_memories(user, p.query_vector, k, filters, query_text=query),
            self.settings.server.search_timeout_s,
        )
        return found or []

    async def _knowledge_search(self, p: Prepared, query: str, scopes: list[str], documents: set[str]) -> list[SourceOut]:
        if p.query_vector is None or self.knowledge is None:
            return []
        s = self.settings.documents
        found = await self._stage(p, "knowledge_search",
                                  self.knowledge.search(query, p.query_vector, scopes, s.k, documents, s.min_similarity),
                                  self.settings.server.search_timeout_s)
        return [
            SourceOut(document_id=h["metadata"]["document_id"], filename=h["metadata"]["filename"],
                      chunk_index=h["metadata"]["chunk_index"], page=h["metadata"].get("page"),
                      rows=h["metadata"].get("rows"), score=round(h["score"], 4), text=h["text"])
            for h in found or []
        ]

    async def _knowledge_scopes(self, user: str | None, enabled: bool) -> tuple[list[str], set[str], int]:
        """Scopes with documents this request may read (the shared one and the user's own),
        the documents registered there, and the registry version they were read at."""
        if not enabled or self.knowledge is None or not self.settings.documents.enabled:
            return [], set(), 0
        registry = await self.knowledge.registry()
        wanted = ["shared"] + ([f"user:{user}"] if user else [])
        scopes = [scope for scope in wanted if scope in registry.documents_by_scope]
        documents = set().union(*(registry.documents_by_scope[scope] for scope in scopes))
        return scopes, documents, registry.version

    async def _prototype_vectors(self) -> dict[str, np.ndarray]:
        if self._prototypes is None:
            protos = self.settings.decision.prototypes
            texts = [t for examples in protos.values() for t in examples]
            vectors = await self.services.embed(texts)
            out, start = {}, 0
            for intent, examples in protos.items():
                out[intent] = vectors[start:start + len(examples)]
                start += len(examples)
            self._prototypes = out
        return self._prototypes

    async def _decide(self, p: Prepared, query: str, vector: np.ndarray | None, categories: list[str]) -> Decision:
        decision = decide(query, vector, await self._prototype_vectors(), categories, self.settings.decision)
        p.info.intent = decision.intent
        return decision

    async def _decide_and_find_products(self, p: Prepared, query: str, catalog: CatalogSnapshot) -> list[ProductOut]:
        """On the critical path only when a catalog exists: products change the prompt."""
        async def work() -> list[ProductOut]:
            decision = await self._decide(p, query, p.query_vector, catalog.categories)
            products: list[ProductOut] = []
            if decision.wants_products and p.query_vector is not None:
                products = self.catalog.search(catalog, query, p.query_vector, decision.constraints,
                                               self.settings.decision.max_products)
            p.info.quick_replies = quick_replies(decision, [x.name for x in products])
            return products

        return await self._stage(p, "decision", work(), self.settings.server.decision_timeout_s) or []

    async def _annotate(self, p: Prepared, query: str, categories: list[str]) -> None:
        """Intent and quick replies when no product decision was needed for the prompt:
        they run beside generation and never delay the first token."""
        async def work() -> None:
            vector = p.query_vector if p.query_vector is not None else (await self.services.embed([query]))[0]
            p.info.quick_replies = quick_replies(await self._decide(p, query, vector, categories), [])

        await self._stage(p, "quick_replies", work(), self.settings.server.decision_timeout_s)

    # ------------------------------------------------------------------ preparing a request

    async def _prepare(
        self, request: ChatCompletionRequest | CompletionRequest, messages: list[dict[str, str]] | None, query: str
    ) -> Prepared:
        opts, server = request.memserve, self.settings.server
        fanout = server.fanout if opts.fanout is None else opts.fanout
        user = request.user
        use_memory = bool(user) and opts.memory
        decisions = self.settings.decision.enabled and opts.products
        use_cache = self.settings.cache.enabled and opts.cache
        p = Prepared(generation=GenerationRequest(request_id=""), info=MemserveInfo(), started=time.perf_counter(),
                     user=user)

        # 0: one snapshot of each source per request, used throughout: the catalog, the
        #    knowledge registry and the memory version (the cache key depends on all three).
        catalog, (kb_scopes, kb_documents, kb_version), version = await run_stages(
            fanout,
            self.catalog.snapshot() if decisions else _none(),
            self._knowledge_scopes(user, opts.knowledge),
            self._stage(p, "memory_version", self.memory.version(user), server.search_timeout_s)
            if use_memory and user else _none(),
        )
        version = version or 0
        use_products = catalog is not None and bool(catalog.records)
        if use_cache:
            scope = f"user:{user}" if use_memory else SHARED_SCOPE
            # The answer also depends on the catalog and the knowledge base it could use.
            sources = [catalog.version if catalog is not None and use_products else 0,
                       kb_version if kb_scopes else 0]
            payload = {**self._cache_payload(request, messages), "sources": sources}
            p.cache_key = cache_key(scope, version, payload)
            p.cache_group = f"{scope}:{version}:{digest({**payload, 'messages': None, 'prompt': None})}"

        # 1: exact lookup || embedding. A hit answers at once: the embedding is dropped.
        need_vector = use_memory or use_products or bool(kb_scopes) or (use_cache and self.settings.cache.semantic)
        embed = self._stage(p, "embed", self.services.embed([query]), server.embed_timeout_s) if need_vector else _none()
        hit, vectors = await self._lookup_beside(fanout, self._cache_get(p, "cache_lookup"), embed)
        if hit is not None:
            return self._from_cache(p, hit, "exact")
        if vectors is not None:
            p.query_vector = vectors[0]

        # 2: semantic lookup || memory search || knowledge search (all shards) || decision
        #    and catalog || single-flight claim.
        k = opts.k or self.settings.memory.default_k
        semantic, memories, sources, products, role = await run_stages(
            fanout,
            self._semantic_lookup(p),
            self._memory_search(p, user, k, opts.tiers, query) if use_memory and user else _none(),
            self._knowledge_search(p, query, kb_scopes, kb_documents) if kb_scopes else _none(),
            self._decide_and_find_products(p, query, catalog) if use_products and catalog else _none(),
            self._claim(p),
        )
        if semantic is not None:
            if role == "leader":
                self._spawn(self.services.cache_release(p.cache_key))  # type: ignore[arg-type]
            return self._from_cache(p, semantic, "semantic")
        memories, products, sources = memories or [], products or [], sources or []
        p.info.memories = [MemoryUsed(id=m["id"], text=m["text"], score=m["score"], tier=m["tier"]) for m in memories]
        p.info.products, p.info.sources = products, sources

        # 3: single flight: a follower waits for the leader's answer.
        p.leader = role == "leader"
        if role == "follower" and await self._follow(p):
            return p

        # 4: the prompt.
        memory_texts = [m["text"] for m in memories]
        extra = "\n\n".join(block for block in (knowledge_block(sources), product_block(products)) if block)
        if messages is not None:
            prompt_messages = build_messages(server.system_prompt, messages, memory_texts, extra)
            p.generation = self._generation(request, messages=prompt_messages)
        else:
            p.generation = self._generation(request, prompt=_completion_prompt(query, memory_texts, extra))
        write_back = opts.write_back if opts.write_back is not None else self.settings.memory.write_back
        if use_memory and write_back and p.query_vector is not None:
            p.write_back = MemoryIn(text=query[: self.settings.memory.max_text_chars],
                                    tier=self.settings.memory.write_back_tier,  # type: ignore[arg-type]
                                    metadata={"source": "chat"})
        if decisions and not use_products:
            categories = catalog.categories if catalog else []
            p.side_work.append(lambda: self._annotate(p, query, categories))
        p.info.timings_ms["prepare"] = round((time.perf_counter() - p.started) * 1000, 2)
        return p

    @staticmethod
    async def _lookup_beside(fanout: bool, lookup: Coroutine[Any, Any, T], other: Coroutine[Any, Any, Any]) -> tuple[T | None, Any]:
        """Run `other` beside the lookup; if the lookup finds something, cancel `other`."""
        if not fanout:
            found = await lookup
            if found is not None:
                other.close()
                return found, None
            return None, await other
        other_task = asyncio.ensure_future(other)
        found = await lookup
        if found is not None:
            other_task.cancel()
            return found, None
        return None, await other_task

    async def _claim(self, p: Prepared) -> str | None:
        """Claim the key for this request (leader), or learn another request holds it."""
        if p.cache_key is None:
            return None
        return await self._stage(p, "single_flight", self.services.cache_claim(p.cache_key),
                                 self.settings.server.cache_timeout_s)

    async def _follow(self, p: Prepared) -> bool:
        """Wait for the leader's answer. False if it gave up: then generate yourself."""
        assert p.cache_key is not None
        started = time.perf_counter()
        hit = await self.services.cache_wait(p.cache_key, self.settings.cache.single_flight_wait_s)
        p.info.timings_ms["single_flight_wait"] = round((time.perf_counter() - started) * 1000, 2)
        if hit is None:
            return False
        self._from_cache(p, hit, "single_flight")
        return True

    @staticmethod
    def _from_cache(p: Prepared, hit: CacheHit, kind: str) -> Prepared:
        p.cached = GenerationResult(**hit.value)
        p.info.cached, p.info.cache, p.info.cache_similarity = True, kind, hit.similarity  # type: ignore[assignment]
        return p

    @staticmethod
    def _generation(request: ChatCompletionRequest | CompletionRequest, **prompt: Any) -> GenerationRequest:
        return GenerationRequest(
            request_id=f"memserve-{uuid.uuid4().hex}", max_tokens=request.token_budget(),
            temperature=request.temperature, top_p=request.top_p, stop=request.stop,  # type: ignore[arg-type]
            seed=request.seed, **prompt,
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
            "products": request.memserve.products,
            "knowledge": request.memserve.knowledge,
        }

    # ------------------------------------------------------------------ public entry points

    async def prepare_chat(self, request: ChatCompletionRequest) -> Prepared:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        return await self._prepare(request, messages, request.last_user_text())

    async def prepare_completion(self, request: CompletionRequest) -> Prepared:
        return await self._prepare(request, None, request.prompt)  # type: ignore[arg-type]

    async def stream(self, p: Prepared) -> AsyncIterator[GenerationChunk]:
        """Yield the answer's chunks (from the cache or the LLM), then finish the request's
        side work. `p.info` is complete once the stream is drained."""
        if p.cached is not None:
            for text in p.cached.chunks:
                yield GenerationChunk(text=text)
            yield GenerationChunk(text="", finish_reason=p.cached.finish_reason,
                                  prompt_tokens=p.cached.prompt_tokens, completion_tokens=p.cached.completion_tokens)
            self._finish(p)
            return
        chunks: list[GenerationChunk] = []
        side: list[asyncio.Future[Any]] = []
        stored = False
        try:
            gen_started = time.perf_counter()
            async for chunk in self.services.generate(p.generation):
                if not chunks:
                    p.info.timings_ms["ttft"] = round((time.perf_counter() - p.started) * 1000, 2)
                    side = [asyncio.ensure_future(start()) for start in p.side_work]
                chunks.append(chunk)
                yield chunk
            p.info.timings_ms["generation"] = round((time.perf_counter() - gen_started) * 1000, 2)
            stored = self._after_answer(p, GenerationResult.collect(chunks))
            if side:
                await asyncio.gather(*side)  # usually done: decoding takes far longer
            self._finish(p)
        finally:
            for work in side:
                work.cancel()
            if p.leader and not stored and p.cache_key is not None:
                self._spawn(self.services.cache_release(p.cache_key))  # followers generate themselves

    def _finish(self, p: Prepared) -> None:
        p.info.timings_ms["total"] = round((time.perf_counter() - p.started) * 1000, 2)
        self.metrics.observe_all(p.info.timings_ms, prefix="stage.")
        self.metrics.observe("request.cached" if p.info.cached else "request.generated", p.info.timings_ms["total"])

    def _after_answer(self, p: Prepared, result: GenerationResult) -> bool:
        """Cache the answer and write the turn back, off the critical path. True if the
        answer goes to the cache (which also releases the single-flight claim)."""
        stored = False
        if p.cache_key and result.finish_reason in CACHEABLE_FINISH:
            self._spawn(self.services.cache_put(p.cache_key, _as_cacheable(result), group=p.cache_group,
                                                vector=p.query_vector))
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


def _as_cacheable(result: GenerationResult) -> dict[str, Any]:
    return {
        "text": result.text, "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "chunks": result.chunks,
    }


def _completion_prompt(prompt: str, memories: list[str], extra: str) -> str:
    notes = "\n".join(f"- {m}" for m in memories)
    head = "\n\n".join(x for x in (f"Relevant notes:\n{notes}" if memories else "", extra) if x)
    return f"{head}\n\n{prompt}" if head else prompt


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed: %r", task.exception())
