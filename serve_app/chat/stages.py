"""The stages of a chat request before its first token, each with a typed result.

    snapshot   memory version || knowledge scope || catalog    (the cache key needs them)
    lookup     exact cache lookup || query embedding             (a hit cancels the embedding)
    context    semantic lookup || memory search || knowledge search || products || claim
    follow     a single-flight follower waits for its leader's answer

Each stage reads its inputs as arguments and returns a frozen record; only the request's
`Trace` (timings, degraded stages) is shared, and only appended to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serve_app.catalog import CatalogService, CatalogSnapshot
from serve_app.chat.cache_policy import CacheKeys
from serve_app.chat.fanout import FanOut, first_unless_found
from serve_app.chat.plan import Plan
from serve_app.chat.trace import Trace
from serve_app.clients import CacheClient, EmbedderClient, RetrieverClient
from serve_app.core.response_cache import CacheHit, ClaimResult
from serve_app.core.retrieval import SearchFilters, SearchHit, ShardQuery
from serve_app.decisions import DecisionService, ProductChoice
from serve_app.knowledge import KnowledgeScope, KnowledgeService
from serve_app.memory_service import MemoryService
from serve_app.protocol import SourceOut
from serve_app.settings import AppSettings


@dataclass(frozen=True)
class Snapshot:
    """One read of each source per request, used throughout it."""

    memory_version: int = 0
    knowledge: KnowledgeScope = field(default_factory=KnowledgeScope)
    catalog: CatalogSnapshot | None = None

    @property
    def has_products(self) -> bool:
        return self.catalog is not None and not self.catalog.empty

    def source_versions(self) -> list[int]:
        """The versions of what the answer could draw on, for its cache key."""
        return [self.catalog.version if self.catalog is not None and self.has_products else 0,
                0 if self.knowledge.empty else self.knowledge.version]


@dataclass(frozen=True)
class Lookup:
    hit: CacheHit | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Context:
    """What the prompt is built from, or the semantic hit that answers instead."""

    semantic: CacheHit | None = None
    memories: list[SearchHit] = field(default_factory=list)
    sources: list[SourceOut] = field(default_factory=list)
    products: ProductChoice | None = None
    role: ClaimResult | None = None


class ChatStages:
    def __init__(
        self, settings: AppSettings, embedder: EmbedderClient, retriever: RetrieverClient, cache: CacheClient,
        memory: MemoryService, knowledge: KnowledgeService, decisions: DecisionService, catalog: CatalogService,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.retriever = retriever
        self.cache = cache
        self.memory = memory
        self.knowledge = knowledge
        self.decisions = decisions
        self.catalog = catalog

    async def snapshot(self, plan: Plan, trace: Trace) -> Snapshot:
        async with FanOut(plan.fanout) as fan:
            catalog = fan.start(self.catalog.snapshot()) if plan.decisions else None
            knowledge = fan.start(self.knowledge.scope_for(plan.user)) if plan.knowledge else None
            version = fan.start(trace.run("memory_version", self.memory.version(plan.user),
                                          self.settings.server.search_timeout_s)) if plan.memory and plan.user else None
        return Snapshot(memory_version=(version.result() if version else None) or 0,
                        knowledge=knowledge.result() if knowledge else KnowledgeScope(),
                        catalog=catalog.result() if catalog else None)

    async def lookup(self, plan: Plan, trace: Trace, keys: CacheKeys | None, query: str, need_vector: bool) -> Lookup:
        """Exact lookup beside the query embedding: a hit answers at once."""
        exact = self._cache_get(trace, "cache_lookup", keys.key) if keys else _nothing()
        embed = trace.run("embed", self.embedder.embed([query]), self.settings.server.embed_timeout_s) \
            if need_vector else _nothing()
        hit, vectors = await first_unless_found(plan.fanout, exact, embed)
        return Lookup(hit, None if vectors is None else vectors[0])

    async def context(self, plan: Plan, trace: Trace, keys: CacheKeys | None, query: str,
                      vector: np.ndarray | None, snapshot: Snapshot) -> Context:
        async with FanOut(plan.fanout) as fan:
            semantic = fan.start(self._semantic_lookup(trace, keys, vector))
            memories = fan.start(self._memories(plan, trace, query, vector)) if plan.memory else None
            sources = fan.start(self._knowledge(trace, query, vector, snapshot.knowledge)) \
                if not snapshot.knowledge.empty else None
            products = fan.start(self._products(trace, query, vector, snapshot.catalog)) \
                if snapshot.has_products else None
            role = fan.start(self._claim(trace, keys)) if keys else None
        return Context(semantic=semantic.result(), memories=memories.result() if memories else [],
                       sources=sources.result() if sources else [],
                       products=products.result() if products else None, role=role.result() if role else None)

    async def follow(self, trace: Trace, keys: CacheKeys) -> CacheHit | None:
        """Wait for the leader's answer; None if it gave up (then generate yourself)."""
        return await trace.timed("single_flight_wait",
                                 self.cache.wait(keys.key, self.settings.cache.single_flight_wait_s))

    async def annotate(self, trace: Trace, query: str, vector: np.ndarray | None) -> ProductChoice | None:
        """Intent and quick replies when no product decision fed the prompt: run beside
        generation, never in front of the first token."""
        return await trace.run("quick_replies", self.decisions.annotate(query, vector),
                               self.settings.server.decision_timeout_s)

    # ------------------------------------------------------------------ single stages

    async def _cache_get(self, trace: Trace, name: str, key: str, group: str | None = None,
                         vector: np.ndarray | None = None, min_similarity: float = 1.0) -> CacheHit | None:
        return await trace.run(name, self.cache.get(key, group, vector, min_similarity),
                               self.settings.server.cache_timeout_s)

    async def _semantic_lookup(
        self, trace: Trace, keys: CacheKeys | None, vector: np.ndarray | None
    ) -> CacheHit | None:
        if not self.settings.cache.semantic or vector is None or keys is None:
            return None
        return await self._cache_get(trace, "semantic_cache", keys.key, keys.group, vector,
                                     self.settings.cache.semantic_threshold)

    async def _memories(self, plan: Plan, trace: Trace, query: str, vector: np.ndarray | None) -> list[SearchHit]:
        if vector is None or plan.user is None:
            return []
        filters = SearchFilters(tiers=plan.tiers, min_similarity=self.settings.memory.min_similarity)
        search = self.retriever.search(ShardQuery(plan.user, vector, plan.k, filters, query,
                                                  time_range=plan.time_range, connections=plan.connections))
        return await trace.run("memory_search", search, self.settings.server.search_timeout_s) or []

    async def _knowledge(self, trace: Trace, query: str, vector: np.ndarray | None,
                         scope: KnowledgeScope) -> list[SourceOut]:
        if vector is None:
            return []
        s = self.settings.documents
        search = self.knowledge.search(query, vector, scope, s.k, s.min_similarity)
        return await trace.run("knowledge_search", search, self.settings.server.search_timeout_s) or []

    async def _products(self, trace: Trace, query: str, vector: np.ndarray | None,
                        catalog: CatalogSnapshot | None) -> ProductChoice | None:
        """On the critical path only when a catalog exists: products change the prompt."""
        return await trace.run("decision", self.decisions.choose(query, vector, catalog),
                               self.settings.server.decision_timeout_s)

    async def _claim(self, trace: Trace, keys: CacheKeys | None) -> ClaimResult | None:
        """Claim the key (leader), or learn that another request holds it (follower)."""
        if keys is None:
            return None
        return await trace.run("single_flight", self.cache.claim(keys.key), self.settings.server.cache_timeout_s)


async def _nothing() -> None:
    return None
