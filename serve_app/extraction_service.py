"""Extraction, the orchestration half: a `messages` write becomes facts (`core.extraction`).

The turns are written first, exactly as without extraction: they are the record of what
was said, and a write must never be lost to a slow or confused model. Then the LLM
deployment is asked for the conversation's facts and, per fact, what to do about the
user's nearest *extracted* facts (memories with metadata `extracted: true`). Only those
are offered to the model: the turns and the memories a client wrote itself are the
user's own records, which a model may read past but never rewrite or delete.

Every change a decision makes goes through `MemoryService` with actor "extraction", so
the memory's history says that the model made it. A fact with no extracted fact near it
is an ADD without asking the model (as mem0 does), which also spares the engine a call.
Any failure of the LLM (an exception, a timeout, an answer outside its schema) ends
extraction with status `failed`; what was applied before it stays, and so do the turns.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serve_app.clients import GeneratorClient
from serve_app.core.extraction import (
    Candidate,
    Decision,
    Event,
    ExtractionError,
    decision_messages,
    decision_schema,
    facts_messages,
    facts_schema,
    parse_decision,
    parse_facts,
)
from serve_app.generation import GenerationRequest
from serve_app.memory_service import MemoryService, WriteResult
from serve_app.protocol import ExtractedFact, ExtractionReport, MemoryIn, UpdateMemoryRequest
from serve_app.settings import MemorySettings

logger = logging.getLogger(__name__)

ACTOR = "extraction"
MARK = "extracted"  # metadata key of a memory extraction wrote; the candidates of a decision
CANDIDATES = 5  # extracted facts a decision is shown
_NEAR = 4 * CANDIDATES  # nearest memories read to find them among the turns
# A fact's own write, in extraction's terms: a merge into a memory updates it.
_AS_FACT_EVENT: dict[str, Event] = {"ADD": "ADD", "MERGE": "UPDATE", "NOOP": "NOOP"}


@dataclass(frozen=True)
class ExtractionWrite:
    """A `messages` write with extraction: the turns' write, what extraction did, and the
    seq that makes all of it readable."""

    written: WriteResult
    report: ExtractionReport
    seq: int


class ExtractionService:
    def __init__(self, memory: MemoryService, generator: GeneratorClient, settings: MemorySettings) -> None:
        self.memory = memory
        self.generator = generator
        self.settings = settings

    async def write(self, user: str, turns: Sequence[MemoryIn], dedup: bool = True) -> ExtractionWrite:
        """Store the turns as a plain write, then extract and apply facts from them."""
        written = await self.memory.add(user, turns, dedup=dedup)
        facts: list[ExtractedFact] = []
        seq = written.seq
        try:
            for fact in await self._facts([t.text for t in turns]):
                applied, fact_seq = await self._apply(user, fact, turns[0])
                facts.append(applied)
                seq = max(seq, fact_seq)
        except ExtractionError as exc:
            logger.warning("extraction for a write of %d turns failed, the turns are stored: %s", len(turns), exc)
            return ExtractionWrite(written, ExtractionReport(status="failed", facts=facts, error=str(exc)), seq)
        return ExtractionWrite(written, ExtractionReport(status="done", facts=facts), seq)

    async def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        """One JSON answer of the LLM, constrained by `schema`; any failure of the call
        (the engine's error, a refusal, the timeout) is an ExtractionError."""
        request = GenerationRequest(request_id=f"extract-{uuid.uuid4().hex}", messages=messages,
                                    max_tokens=self.settings.extraction_max_tokens, temperature=0.0,
                                    json_schema=schema)
        try:
            result = await asyncio.wait_for(self.generator.complete(request), self.settings.extraction_timeout_s)
        except TimeoutError:
            raise ExtractionError(f"the LLM did not answer within {self.settings.extraction_timeout_s:g} s") from None
        except Exception as exc:  # any failure of the LLM deployment: the plain write stands
            raise ExtractionError(f"the LLM call failed: {type(exc).__name__}: {exc}") from exc
        if result.finish_reason == "length":
            raise ExtractionError(f"the LLM's answer was cut at {self.settings.extraction_max_tokens} tokens")
        return result.text

    async def _facts(self, turns: list[str]) -> list[str]:
        max_facts = self.settings.extraction_max_facts
        return parse_facts(await self._ask(facts_messages(turns), facts_schema(max_facts)), max_facts)

    async def _candidates(self, user: str, fact: str) -> list[Candidate]:
        """The user's extracted facts nearest to `fact` (at least memory.min_similarity)."""
        vectors = await self.memory.embedder.embed([fact])
        (near,) = await self.memory.retriever.near(user, vectors, [fact], _NEAR, self.settings.min_similarity)
        return [Candidate(m.record.id, m.record.text) for m in near if m.record.metadata.get(MARK) is True][:CANDIDATES]

    async def _decide(self, fact: str, candidates: list[Candidate]) -> Decision:
        if not candidates:
            return Decision("ADD", None, fact)
        answer = await self._ask(decision_messages(fact, candidates), decision_schema(len(candidates)))
        return parse_decision(answer, fact, candidates)

    async def _apply(self, user: str, fact: str, turn: MemoryIn) -> tuple[ExtractedFact, int]:
        """Decide about one fact and carry the decision out; returns what was done and its seq."""
        decision = await self._decide(fact, await self._candidates(user, fact))
        target = decision.target
        if target is not None and decision.event == "UPDATE" and decision.text != target.text:
            patch = UpdateMemoryRequest.model_construct(user=user, text=decision.text)
            updated = await self.memory.update(target.id, patch, actor=ACTOR)
            if updated is not None:
                return ExtractedFact(text=decision.text, event="UPDATE", id=target.id, previous=target.text), updated[1]
            return await self._add(user, decision.text, turn)  # deleted meanwhile: the fact is added, not lost
        if target is not None and decision.event == "DELETE":
            seq = await self.memory.delete(user, target.id, actor=ACTOR)
            return ExtractedFact(text=fact, event="DELETE", id=target.id, previous=target.text), seq or 0
        if target is not None:  # NOOP, or an UPDATE that changes nothing
            return ExtractedFact(text=fact, event="NOOP", id=target.id, previous=target.text), 0
        return await self._add(user, decision.text, turn)

    async def _add(self, user: str, text: str, turn: MemoryIn) -> tuple[ExtractedFact, int]:
        """A new extracted fact, with the turns' tier, importance, metadata and event time
        (no session: a fact is not a turn). The write's own dedup still applies: a fact
        stated word for word is a NOOP, a restatement a merge (reported as UPDATE)."""
        item = MemoryIn(text=text, tier=turn.tier, importance=turn.importance,
                        metadata={**turn.metadata, MARK: True}, occurred_at=turn.occurred_at)
        written = await self.memory.add(user, [item], actor=ACTOR)
        (outcome,) = written.outcomes
        return ExtractedFact(text=text, event=_AS_FACT_EVENT[outcome.event], id=outcome.id), written.seq
