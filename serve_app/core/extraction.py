"""LLM fact extraction, the pure half: prompts, JSON schemas and parsing (no LLM, no store).

`memory.extraction: llm` asks the LLM two things, as mem0 and the add/update phase of the
design memserve grew from do: which short facts a conversation states, and, for each fact,
what to do about the user's nearest memories (ADD it, UPDATE one of them, DELETE one it
contradicts, or NOOP because one already says it). Both answers are constrained by a JSON
schema (vLLM structured outputs), so a well-formed answer is the engine's job; what the
schema cannot rule out (a truncated answer, an id the model was not shown) is refused
here, so a model's mistake can never touch a memory it was not offered.

The facts prompt has no worked example: with one, the bundled 135M model copied the
example's facts into its answers (seen on the first two snippets of the evaluation).

The memories a decision may act on are shown to the model by position ("1", "2", ...),
not by their ids: a small model copies a one-digit label far more reliably than a uuid,
and the schema's enum then holds exactly the labels offered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Event = Literal["ADD", "UPDATE", "DELETE", "NOOP"]
EVENTS: tuple[Event, ...] = ("ADD", "UPDATE", "DELETE", "NOOP")
NO_TARGET = "none"  # the decision's `id` when it acts on no existing memory (ADD)
# A short fact; with `memory.extraction_max_facts` (5) of them the answer fits the default
# `memory.extraction_max_tokens` (512), so a schema-valid answer is not cut short.
MAX_FACT_CHARS = 160
# A fact is a sentence: the schema keeps a small model from answering with bare names.
MIN_FACT_CHARS = 12

FACTS_SYSTEM = (
    "You extract facts from a conversation. Write each fact a speaker states about themselves "
    "(names, preferences, plans, events, relationships) as one short, self-contained sentence "
    "that names the person. Do not invent facts; leave out greetings and questions. "
    'Answer with JSON: {"facts": ["...", "..."]} (an empty list when there are none).'
)
DECISION_SYSTEM = (
    "You maintain a list of facts about a user. Given a new fact and the existing memories that "
    "are closest to it, choose one event: ADD if the fact is new; UPDATE if it changes or adds "
    "detail to one memory (give that memory's id and the updated text); DELETE if it shows one "
    "memory is no longer true (give its id); NOOP if a memory already says the same. "
    'Answer with JSON: {"event": "...", "id": "...", "text": "..."}; id is "none" for ADD.'
)


class ExtractionError(ValueError):
    """The LLM's answer is not what its schema asked for (truncated, malformed, or naming a
    memory it was not offered). The caller keeps the plain write and reports it."""


@dataclass(frozen=True)
class Candidate:
    """One existing memory a decision is shown: its public id and text."""

    id: str
    text: str


@dataclass(frozen=True)
class Decision:
    """What to do about one fact. `target`: the memory acted on (UPDATE, DELETE, NOOP),
    None for ADD. `text`: the fact as it should be stored (ADD, UPDATE)."""

    event: Event
    target: Candidate | None
    text: str


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facts: list[str]


class _Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: Event
    id: str
    text: str = Field(default="", max_length=MAX_FACT_CHARS)


def facts_schema(max_facts: int) -> dict[str, Any]:
    """The extraction answer: at most `max_facts` facts of a sentence's length."""
    return {
        "type": "object",
        "properties": {"facts": {
            "type": "array", "maxItems": max_facts,
            "items": {"type": "string", "minLength": MIN_FACT_CHARS, "maxLength": MAX_FACT_CHARS}}},
        "required": ["facts"],
        "additionalProperties": False,
    }


def decision_schema(offered: int) -> dict[str, Any]:
    """The decision answer about one fact, given `offered` candidate memories (labelled
    "1".."offered"): the schema itself confines `id` to those labels and "none"."""
    labels = [NO_TARGET, *(str(i + 1) for i in range(offered))]
    return {
        "type": "object",
        "properties": {"event": {"type": "string", "enum": list(EVENTS)},
                       "id": {"type": "string", "enum": labels},
                       "text": {"type": "string", "maxLength": MAX_FACT_CHARS}},
        "required": ["event", "id", "text"],
        "additionalProperties": False,
    }


def facts_messages(turns: Sequence[str]) -> list[dict[str, str]]:
    """The chat that asks for the facts of a conversation (its turns, "speaker: text")."""
    conversation = "\n".join(turn.strip() for turn in turns if turn.strip())
    return [{"role": "system", "content": FACTS_SYSTEM},
            {"role": "user", "content": f"Conversation:\n{conversation}\n\nFacts as JSON:"}]


def decision_messages(fact: str, candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    """The chat that asks what to do about `fact` given its nearest memories."""
    listed = "\n".join(f'{i + 1}. "{c.text}"' for i, c in enumerate(candidates))
    return [{"role": "system", "content": DECISION_SYSTEM},
            {"role": "user", "content": f"Existing memories:\n{listed}\n\nNew fact: \"{fact}\"\n\nDecision as JSON:"}]


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExtractionError(f"the LLM's answer is not JSON ({exc.msg} at {exc.pos}): {text[:200]!r}") from None


def parse_facts(text: str, max_facts: int) -> list[str]:
    """The facts of an extraction answer: stripped, blank ones and repeats dropped, at
    most `max_facts`; ExtractionError when the answer is not the schema's."""
    try:
        parsed = _Facts.model_validate(_load(text))
    except ValidationError as exc:
        raise ExtractionError(f"the LLM's facts do not match the schema: {exc.errors()[0]['msg']}") from None
    facts = [" ".join(f.split())[:MAX_FACT_CHARS] for f in parsed.facts]
    return list(dict.fromkeys(f for f in facts if f))[:max_facts]


def parse_decision(text: str, fact: str, candidates: Sequence[Candidate]) -> Decision:
    """A decision answer as a typed record. An id that was not offered is refused (an
    ExtractionError), as is an UPDATE, DELETE or NOOP without one; an ADD ignores any id
    and stores the fact as extracted; an UPDATE without text stores the fact itself."""
    try:
        parsed = _Decision.model_validate(_load(text))
    except ValidationError as exc:
        raise ExtractionError(f"the LLM's decision does not match the schema: {exc.errors()[0]['msg']}") from None
    if parsed.event == "ADD":  # the fact as extracted: the decision adds nothing to it
        return Decision("ADD", None, fact)
    stored = " ".join(parsed.text.split()) or fact
    if parsed.id == NO_TARGET:
        raise ExtractionError(f"the LLM chose {parsed.event} without naming a memory")
    if not parsed.id.isdigit() or not 1 <= int(parsed.id) <= len(candidates):
        raise ExtractionError(f"the LLM named memory {parsed.id!r}, which it was not offered")
    return Decision(parsed.event, candidates[int(parsed.id) - 1], stored)
