"""The memory API's logic. Writes go to the store (acknowledged after commit), searches
to the user's shard. A write that restates one of the user's memories merges into it or,
word for word, changes nothing; one that differs in a fact (a day, a number, a name, a
negation) is added however close its embedding (`core.sameness`, `core.write_plan`). A
tier over its cap evicts its lowest-retention memories.

Memories form as they are written: a turn of a conversation (`session`) is indexed with
the turn before it and its date (`core.conversation`), connected to its neighbouring turns
and, like any memory, to the user's memories of other conversations it is close to
(`memory.connection_threshold`). A search reads the time its query names
(`core.temporal`) and, when asked, adds the memories connected to its results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from serve_app.clients import CacheClient, EmbedderClient, RetrieverClient
from serve_app.clients.endpoint import within
from serve_app.core.conversation import index_text
from serve_app.core.retrieval import NearMemory, SearchFilters, ShardQuery
from serve_app.core.store import HistoryEvent, MemoryPatch, MemoryRecord, MemoryStore, NewMemory
from serve_app.core.temporal import TimeRange, anchored_range, parse_time_query
from serve_app.core.write_plan import Draft, Incoming, WriteOutcome, WritePlan, outcomes, plan_writes
from serve_app.maintenance import TierMaintainer
from serve_app.protocol import (
    MemoryIn,
    MemoryRecordOut,
    SearchMemoriesRequest,
    SearchResult,
    UpdateMemoryRequest,
)
from serve_app.settings import MemorySettings

# Existing memories judged per written item: enough to get past a few near ones that
# state other facts (other days, other numbers) to the one the item repeats.
NEAR_CANDIDATES = 8
# Time a write may add to `lookup_deadline_s` per item it embeds. A batch of 250 conversation
# turns took up to 35 s before its commit (0.14 s per item) while a vLLM engine kept both
# cores busy; 0.5 s leaves room for that, so only a stage that does not answer hits it.
WRITE_S_PER_ITEM = 0.5


@dataclass(frozen=True)
class WriteResult:
    """One `add`: each item's outcome, in order, and the seq that makes them readable."""

    outcomes: list[WriteOutcome]
    seq: int

    @property
    def ids(self) -> list[str]:
        return [o.id for o in self.outcomes]


def _patch(draft: Draft) -> MemoryPatch:
    """A MERGE's change to an existing memory; the text (and embedding) only when reworded."""
    return MemoryPatch(text=draft.text if draft.reembed else None, embedding=draft.vector if draft.reembed else None,
                       index_text=draft.index_text if draft.reembed else None,
                       importance=draft.importance, metadata=draft.metadata)


def record_out(record: MemoryRecord) -> MemoryRecordOut:
    return MemoryRecordOut(
        id=record.id, text=record.text, tier=record.tier, importance=record.importance,
        metadata=record.metadata, created_at=record.created_at, updated_at=record.updated_at,
        access_count=record.access_count, expires_at=record.expires_at, occurred_at=record.event_time,
        session=record.session,
    )


@dataclass(frozen=True)
class _Previous:
    """The turn an item follows in its session: an earlier item of the same write, or the
    session's latest stored memory."""

    text: str
    key: int | None = None  # a stored memory
    item: int | None = None  # an earlier item of this write


def _different_sessions(a: str | None, b: str | None) -> bool:
    """Related links join memories of different conversations; a session's own turns are
    connected by their order."""
    return a is None or b is None or a != b


class MemoryService:
    def __init__(
        self, store: MemoryStore, embedder: EmbedderClient, retriever: RetrieverClient, cache: CacheClient,
        settings: MemorySettings, lookup_deadline_s: float = 10.0,
    ) -> None:
        # How long a search, or a write before it commits, may wait on other deployments
        # (the Embedder, then a shard): past it a 503 to retry (`within`) rather than waiting
        # on a replica of a lost node.
        self.store = store
        self.lookup_deadline_s = lookup_deadline_s
        self.embedder = embedder
        self.retriever = retriever
        self.cache = cache
        self.settings = settings
        self.tiers = settings.tier_registry()
        self.maintainer = TierMaintainer(store, self.tiers, settings.consolidation, retriever.num_shards)

    def tier_of(self, requested: str | None) -> str:
        """The configured tier a request names, or the default one; UnknownTier (a 400)
        for a tier this server does not have."""
        return self.tiers.check(requested or self.settings.default_tier)

    def shard(self, user: str) -> int:
        return self.retriever.shard_of(user)

    # ------------------------------------------------------------------ writes

    async def add(
        self, user: str, items: Sequence[MemoryIn], vectors: np.ndarray | None = None, dedup: bool = True,
        actor: str = "api",
    ) -> WriteResult:
        """Embed (unless the caller has the vectors), decide per item whether it adds a
        memory, merges into one that states the same fact, or repeats one (NOOP; see
        `core.write_plan`), commit, and report each item's outcome and the seq to read at."""
        tiers = [self.tier_of(item.tier) for item in items]  # refuse an unknown tier before any work
        # Nothing is written before the plan is made, so a write past its deadline here is
        # refused whole and a retry is safe. A batch embeds every item: it gets more time.
        deadline_s = self.lookup_deadline_s + WRITE_S_PER_ITEM * len(items)
        incoming, near = await within(self._prepare(user, items, tiers, vectors, dedup), deadline_s,
                                      "the memory write")
        plan = plan_writes(incoming, near, self.settings.dedup_threshold, dedup)
        ids, gone, seq = await asyncio.to_thread(self._commit, user, plan, actor)
        await asyncio.to_thread(self.maintainer.enforce_caps, user)
        return WriteResult(outcomes(plan, ids, gone), seq)

    async def _prepare(
        self, user: str, items: Sequence[MemoryIn], tiers: Sequence[str], vectors: np.ndarray | None, dedup: bool,
    ) -> tuple[list[Incoming], list[list[NearMemory]]]:
        """Each item as the write plan takes it (index text, vector, related memories), and
        the user's memories near each: the write's reads of other deployments."""
        now = time.time()
        previous = await asyncio.to_thread(self._previous_turns, user, items, now)
        index_texts = [
            index_text(item.text, now if item.occurred_at is None else item.occurred_at, prev.text if prev else None)
            if item.session else None
            for item, prev in zip(items, previous, strict=True)
        ]
        indexed = [t or item.text for t, item in zip(index_texts, items, strict=True)]
        if vectors is None or any(index_texts):  # a caller's vectors embed the plain texts
            vectors = await self.embedder.embed(indexed)
        s = self.settings
        linking = s.max_connections > 0
        near: list[list[NearMemory]] = [[] for _ in items]
        if dedup or linking:
            floor = min(s.dedup_threshold, s.connection_threshold) if linking else s.dedup_threshold
            near = await self.retriever.near(user, vectors, indexed, NEAR_CANDIDATES, floor)
        incoming = [
            Incoming(item.text, tier, item.importance, vector, item.metadata, item.occurred_at, item.session, itext,
                     self._related(item.session, prev, candidates) if linking else ())
            for item, tier, vector, itext, prev, candidates
            in zip(items, tiers, vectors, index_texts, previous, near, strict=True)
        ]
        return incoming, near

    def _previous_turns(self, user: str, items: Sequence[MemoryIn], now: float) -> list[_Previous | None]:
        """For each item with a session, the turn it follows (the user's own, unexpired)."""
        found: list[_Previous | None] = []
        last_item: dict[str, int] = {}
        for i, item in enumerate(items):
            session = item.session
            if session is None:
                found.append(None)
                continue
            if session in last_item:
                found.append(_Previous(items[last_item[session]].text, item=last_item[session]))
            else:
                tail = self.store.session_turn_before(user, session, None)
                found.append(_Previous(tail.text, key=tail.key) if tail and not tail.expired(now) else None)
            last_item[session] = i
        return found

    def _related(self, session: str | None, previous: _Previous | None, near: Sequence[NearMemory]) -> tuple[int, ...]:
        """The existing memories a new one is related to: the closest few at or above
        `memory.connection_threshold`, from other conversations (its own session's turns are
        connected by order)."""
        chosen = [m.record.key for m in near
                  if m.similarity >= self.settings.connection_threshold
                  and _different_sessions(session, m.record.session)
                  and (previous is None or m.record.key != previous.key)]
        return tuple(chosen[: self.settings.max_connections])

    def _batch_related(self, drafts: Sequence[Draft]) -> list[tuple[int, ...]]:
        """For each new draft, the earlier new drafts of the same write (positions) it is
        related to, as `_related` judges existing memories."""
        s = self.settings
        if len(drafts) < 2:
            return [() for _ in drafts]
        vectors = np.stack([np.asarray(d.vector, dtype=np.float32).reshape(-1) for d in drafts])
        similarity = vectors @ vectors.T
        found: list[tuple[int, ...]] = []
        for i, draft in enumerate(drafts):
            close = sorted(((float(similarity[i, j]), j) for j in np.flatnonzero(similarity[i, :i]
                                                                                 >= s.connection_threshold)
                            if _different_sessions(draft.session, drafts[j].session)), reverse=True)
            found.append(tuple(int(j) for _, j in close[: max(0, s.max_connections - len(draft.related))]))
        return found

    def _commit(self, user: str, plan: WritePlan, actor: str) -> tuple[list[str], set[int], int]:
        """Run a plan: MERGE-update the existing memories it changes, check that the ones
        it only repeats still exist, then add the new drafts and those whose memory was
        deleted since the candidates were read (the fact is added, never dropped).
        Returns each draft's id, the vanished drafts, and the seq to read at: the last
        write's, or the user's version when nothing was written (every item a NOOP)."""
        now, shard = time.time(), self.shard(user)
        ids = [d.target.id if d.target is not None else "" for d in plan.drafts]
        updates = [i for i, d in enumerate(plan.drafts) if d.target is not None and d.changed]
        seq = 0
        if updates:
            patches = [(ids[i], _patch(plan.drafts[i])) for i in updates]
            records, seq = self.store.update(user, shard, patches, actor, "MERGE")
            done = {r.id for r in records}
            gone = {i for i in updates if ids[i] not in done}
        else:
            gone = set()
        for i, draft in enumerate(plan.drafts):
            if draft.target is not None and not draft.changed:
                record = self.store.get(user, ids[i])
                if record is None or record.expired(now):
                    gone.add(i)
        repeated = [d.target.key for i, d in enumerate(plan.drafts) if d.target is not None and i not in gone]
        self.store.record_access(user, repeated, now)  # restating a memory counts as using it
        fresh = [i for i, d in enumerate(plan.drafts) if d.target is None or i in gone]
        if fresh:
            drafts = [plan.drafts[i] for i in fresh]
            in_batch = self._batch_related(drafts) if self.settings.max_connections > 0 else [() for _ in drafts]
            new = [self._new_memory(draft, now, related) for draft, related in zip(drafts, in_batch, strict=True)]
            records, add_seq = self.store.add(user, shard, new, actor)
            for i, record in zip(fresh, records, strict=True):  # one record per new draft
                ids[i] = record.id
            seq = max(seq, add_seq)
        return ids, gone, seq or self.store.user_version(user)

    def _new_memory(self, draft: Draft, now: float, related_items: tuple[int, ...] = ()) -> NewMemory:
        return NewMemory(text=draft.text, tier=draft.tier, importance=draft.importance, embedding=draft.vector,
                         metadata=draft.metadata, expires_at=self.tiers.expires_at(draft.tier, now),
                         occurred_at=draft.occurred_at, session=draft.session, index_text=draft.index_text,
                         related=draft.related, related_items=related_items)

    async def update(
        self, memory_id: str, request: UpdateMemoryRequest, actor: str = "api",
    ) -> tuple[MemoryRecordOut, int] | None:
        """Patch one memory. New text is re-embedded; a conversation turn whose text or event
        time changes is re-indexed with its context (the turn before it, the new date)."""
        tier_expiry = self.tiers.expires_at(request.tier, time.time()) if request.tier else None
        text, itext = request.text, None
        if request.text is not None or request.occurred_at is not None:
            record = await asyncio.to_thread(self.store.get, request.user, memory_id)
            if record is None:
                return None
            if record.session is not None:
                before = await asyncio.to_thread(self.store.session_turn_before, request.user, record.session,
                                                 record.key)
                text = request.text or record.text
                when = record.event_time if request.occurred_at is None else request.occurred_at
                itext = index_text(text, when, before.text if before else None)
        embedding = None if text is None else await self.embedder.embed_one(itext or text)
        patch = MemoryPatch(text=text, embedding=embedding, importance=request.importance, index_text=itext,
                            metadata=request.metadata, tier=request.tier, expires_at=tier_expiry,
                            occurred_at=request.occurred_at)
        records, seq = await asyncio.to_thread(
            self.store.update, request.user, self.shard(request.user), [(memory_id, patch)], actor
        )
        if not records:
            return None
        await asyncio.to_thread(self.maintainer.enforce_caps, request.user)
        return record_out(records[0]), seq

    async def delete(self, user: str, memory_id: str, actor: str = "api") -> int | None:
        return await asyncio.to_thread(self.store.delete, user, self.shard(user), [memory_id], actor)

    async def forget(self, user: str) -> int:
        """Every trace of the user: records, history, log entries, index entries and
        snapshots (replicas act on the `forget` log marker), and cached answers."""
        seq = await asyncio.to_thread(self.store.forget_user, user, self.shard(user))
        await self.cache.clear(f"user:{user}")
        return seq

    # ------------------------------------------------------------------ reads

    async def last_seq(self) -> int:
        """The seq of the latest write (every seq a write answered with is at most this)."""
        return await asyncio.to_thread(self.store.last_seq, None)

    async def search(self, request: SearchMemoriesRequest) -> list[SearchResult]:
        """The user's memories for a query, within `lookup_deadline_s` (embedding and the
        shard's search together)."""
        return await within(self._search(request), self.lookup_deadline_s, "the memory search")

    async def _search(self, request: SearchMemoriesRequest) -> list[SearchResult]:
        f = request.filters
        filters = SearchFilters(
            tiers=[self.tiers.check(t) for t in request.tiers] if request.tiers else None,
            metadata=f.metadata, created_after=f.created_after, created_before=f.created_before,
            occurred_after=f.occurred_after, occurred_before=f.occurred_before,
        )
        about = parse_time_query(request.query, time.time()) if self.settings.scoring.time_boost else None
        anchor = about.anchor if about is not None else None
        vectors = await self.embedder.embed([request.query, *([anchor[1]] if anchor else [])])
        time_range = about.range if about is not None else None
        if anchor is not None:
            time_range = await self._anchored(request, anchor[0], anchor[1], vectors[1], filters)
        connections = self.settings.max_connections if request.include_connections else 0
        query = ShardQuery(request.user, vectors[0], request.k, filters, request.query, request.min_seq, time_range,
                           connections)
        return [SearchResult.of(hit) for hit in await self.retriever.search(query)]

    async def _anchored(
        self, request: SearchMemoriesRequest, direction: Literal["before", "after"], event: str, vector: np.ndarray,
        filters: SearchFilters,
    ) -> TimeRange | None:
        """'before the trip': the time before (or after) the user's memory that best matches
        the event, if one matches at least `memory.min_similarity`."""
        lookup = SearchFilters(tiers=filters.tiers, min_similarity=self.settings.min_similarity)
        found = await self.retriever.search(ShardQuery(request.user, vector, 1, lookup, event, request.min_seq))
        if not found or found[0].occurred_at is None:
            return None
        return anchored_range(direction, found[0].occurred_at)

    async def get(self, user: str, memory_id: str) -> MemoryRecordOut | None:
        record = await asyncio.to_thread(self.store.get, user, memory_id)
        return None if record is None or record.expired(time.time()) else record_out(record)

    async def page(
        self, user: str, tier: str | None, limit: int, cursor: str | None
    ) -> tuple[list[MemoryRecordOut], str | None]:
        if tier is not None:
            self.tiers.check(tier)
        after = int(cursor) if cursor else None
        records = await asyncio.to_thread(self.store.list, user, tier, limit + 1, after)
        page, more = records[:limit], len(records) > limit
        now = time.time()
        return [record_out(r) for r in page if not r.expired(now)], (str(page[-1].key) if more else None)

    async def history(self, user: str, memory_id: str) -> list[HistoryEvent]:
        return await asyncio.to_thread(self.store.history, user, memory_id)

    async def stats(self, user: str) -> dict[str, Any]:
        counts = await asyncio.to_thread(self.store.tier_counts, user)
        return {
            "user": user, "total": sum(counts.values()),
            "tiers": {t: {"count": counts.get(t, 0), "cap": p.cap, "ttl_s": p.ttl_s}
                      for t, p in self.tiers.policies.items()},
        }

    async def version(self, user: str) -> int:
        return await asyncio.to_thread(self.store.user_version, user)
