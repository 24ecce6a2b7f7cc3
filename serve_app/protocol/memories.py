"""memserve's own shapes for `/v1/memories*` and `DELETE /v1/users/{user}`.

Every request that names a user passes `UserCheck`, so no body can reach the system
namespaces (the catalog, the knowledge base) through the memory API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from serve_app.core.retrieval import SearchHit
from serve_app.core.temporal import EVENT_TIME_HELP, MAX_EVENT_TIME, MIN_EVENT_TIME, parse_event_time
from serve_app.protocol.common import MAX_K, MAX_SEQ, MAX_USER_CHARS, OpenAIModel, Tier, UserCheck
from serve_app.protocol.openai import ChatMessage
from serve_app.protocol.rules import MESSAGE_WITH_TEXT, NON_BLANK, Metadata, from_setting, given, rules

# When something happened: ISO 8601 or Unix seconds in, Unix seconds out (bounded; a bad
# value is a 400 naming the field).
# `parse_event_time` in the schema. Python reads more ISO 8601 forms than RFC 3339's (week
# dates, no dashes); the strings stated are the interoperable ones, in years whose every
# offset keeps the instant inside the bounds.
_YEARS = "^(?:190[1-9]|19[1-9][0-9]|20[0-8][0-9]|209[0-8])-"
_EVENT_TIME = {"anyOf": [{"type": "number", "minimum": MIN_EVENT_TIME, "exclusiveMaximum": MAX_EVENT_TIME},
                         {"type": "string", "format": "date-time", "pattern": _YEARS},
                         {"type": "string", "format": "date", "pattern": _YEARS}]}
EventTime = Annotated[float, BeforeValidator(parse_event_time), WithJsonSchema(_EVENT_TIME),
                      Field(description=EVENT_TIME_HELP)]
# A conversation id: turns of one session are indexed with the turn before them and
# connected to their neighbours.
Session = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]

_SESSION_HELP = "conversation id: the turn is indexed with the one before it and its date, and connected to them"
_OCCURRED_HELP = "when it happened (default: now); ISO 8601 or Unix seconds"
# The longest memory text is configuration; the route checks it (a 400).
_TEXT_LIMIT = from_setting(maxLength="memory.max_text_chars")
# `_exactly_one_source`, in the schema: one of text, messages, memories (the others absent
# or null), and something to remember in it.
_ONE_SOURCE = {"anyOf": [
    {"required": ["text"], "properties": {"text": {"type": "string", "pattern": NON_BLANK},
                                          "messages": {"type": "null"}, "memories": {"type": "null"},
                                          "extraction": {"type": "null"}}},
    {"required": ["messages"], "properties": {"messages": {"type": "array", "contains": MESSAGE_WITH_TEXT},
                                              "text": {"type": "null"}, "memories": {"type": "null"}}},
    {"required": ["memories"], "properties": {"memories": {"type": "array", "minItems": 1},
                                              "text": {"type": "null"}, "messages": {"type": "null"},
                                              "extraction": {"type": "null"}}},
]}


class MemoryIn(OpenAIModel):
    text: str = Field(min_length=1, json_schema_extra=_TEXT_LIMIT)
    tier: Tier | None = Field(default=None, description="default: the server's memory.default_tier")
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: Metadata = Field(default_factory=dict)
    session: Session | None = Field(default=None, description=_SESSION_HELP)
    occurred_at: EventTime | None = Field(default=None, description=_OCCURRED_HELP)


class AddMemoriesRequest(OpenAIModel):
    """One memory (`text` or chat `messages`) or a batch (`memories`). `session` and
    `occurred_at` apply to the text, to every message, and to each of `memories` that does
    not give its own. A message is stored as "<name or role>: <content>" (at most
    memory.max_text_chars characters, like `text`)."""

    model_config = ConfigDict(json_schema_extra=rules(_ONE_SOURCE))

    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    text: str | None = Field(default=None, json_schema_extra=_TEXT_LIMIT)
    messages: list[ChatMessage] | None = None
    memories: list[MemoryIn] | None = Field(default=None, max_length=1000)
    tier: Tier | None = Field(default=None, description="default: the server's memory.default_tier")
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: Metadata = Field(default_factory=dict)
    session: Session | None = Field(default=None, description=_SESSION_HELP)
    occurred_at: EventTime | None = Field(default=None, description=_OCCURRED_HELP)
    dedup: bool = Field(default=True, description="merge restatements into existing memories")
    extraction: Literal["off", "llm"] | None = Field(
        default=None, description="the `messages` form only: also turn the conversation into short facts through "
                                  "the LLM (ADD/UPDATE/DELETE/NOOP against the user's extracted facts); default: "
                                  "the server's memory.extraction")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> AddMemoriesRequest:
        given = [x is not None for x in (self.text, self.messages, self.memories)]
        if sum(given) != 1:
            raise ValueError("give exactly one of text, messages or memories")
        if not self.items():
            raise ValueError("nothing to remember: the text is empty")
        if self.extraction is not None and self.messages is None:
            raise ValueError("extraction applies to the messages form only (a conversation to extract facts from)")
        return self

    def items(self) -> list[MemoryIn]:
        if self.memories is not None:
            return [m.model_copy(update={"session": m.session or self.session,
                                         "occurred_at": self.occurred_at if m.occurred_at is None else m.occurred_at})
                    for m in self.memories]
        if self.text is not None:
            texts = [self.text] if self.text.strip() else []
        else:
            texts = [f"{m.name or m.role}: {m.text()}" for m in self.messages or [] if m.text().strip()]
        return [
            MemoryIn(text=t, tier=self.tier, importance=self.importance, metadata=self.metadata,
                     session=self.session, occurred_at=self.occurred_at)
            for t in texts
        ]


class MemoryWriteResult(BaseModel):
    """What one item of a write did (mem0's per-item `event`). ADD: a new memory `id`.
    MERGE: the item restated memory `merged_into` (== `id`), which now carries its wording,
    the higher importance and the merged metadata. NOOP: the item repeats memory `id` word
    for word and changes nothing. `reason` says why: `new`; the fact that kept it apart
    from a close memory (`number`, `time`, `name`, `negation`); `identical`; `paraphrase`;
    `target_gone` (the memory it would merge into was deleted meanwhile)."""

    id: str
    event: Literal["ADD", "MERGE", "NOOP"]
    reason: str
    merged_into: str | None = None


class ExtractedFact(BaseModel):
    """One fact the LLM extracted and what was done about it (mem0's event names). ADD: a
    new memory `id` (metadata `extracted: true`). UPDATE: memory `id`, whose text was
    `previous`, now says `text`. DELETE: memory `id` (its text was `previous`) is gone,
    contradicted by the fact. NOOP: memory `id` already says it; nothing was written."""

    text: str
    event: Literal["ADD", "UPDATE", "DELETE", "NOOP"]
    id: str
    previous: str | None = None


class ExtractionReport(BaseModel):
    """What extraction did for a `messages` write. `done`: every fact the LLM gave is
    applied. `failed`: the LLM did not answer in time or not as its JSON schema asked
    (`error` says which); the turns are stored regardless, and `facts` lists the facts
    applied before it failed."""

    status: Literal["done", "failed"]
    facts: list[ExtractedFact] = Field(default_factory=list)
    error: str | None = None


class AddMemoriesResponse(BaseModel):
    ids: list[str]  # one per item, in order (`results[i].id`), kept for older clients
    seq: int  # the last write's seq; when every item is a NOOP, the user's current version
    results: list[MemoryWriteResult] = Field(default_factory=list)
    # Only when extraction ran (memory.extraction or the request's `extraction`: llm).
    extraction: ExtractionReport | None = None


class MemoryFilters(OpenAIModel):
    """Its own keys are fixed (an unknown one is a 400); `metadata` takes the user's own keys.
    `created_*` are when a memory was written (Unix seconds); `occurred_*` when its event
    happened (ISO 8601 or Unix seconds); bounds are inclusive."""

    metadata: Metadata = Field(default_factory=dict, description="equality on each key")
    created_after: float | None = None
    created_before: float | None = None
    occurred_after: EventTime | None = None
    occurred_before: EventTime | None = None


class SearchMemoriesRequest(OpenAIModel):
    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=MAX_K)
    tiers: list[Tier] | None = None
    filters: MemoryFilters = Field(default_factory=MemoryFilters)
    min_seq: int | None = Field(default=None, ge=0, le=MAX_SEQ)
    include_connections: bool = Field(
        default=False, description="after the top k, up to memory.max_connections memories connected to them")


class UpdateMemoryRequest(OpenAIModel):
    # `_changes_something`, in the schema: some field besides `user` is given.
    model_config = ConfigDict(json_schema_extra=rules(
        lambda cls: {"anyOf": [given(name) for name in cls.model_fields if name != "user"]}))

    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    text: str | None = Field(default=None, min_length=1, json_schema_extra=_TEXT_LIMIT)
    importance: float | None = Field(default=None, ge=0.0, le=1.0)
    metadata: Metadata | None = None
    tier: Tier | None = None
    occurred_at: EventTime | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateMemoryRequest:
        if all(v is None for v in (self.text, self.importance, self.metadata, self.tier, self.occurred_at)):
            raise ValueError("give at least one of text, importance, metadata, tier or occurred_at")
        return self


class MemoryRecordOut(BaseModel):
    id: str
    text: str
    tier: str
    importance: float
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    access_count: int = 0
    expires_at: float | None = None
    occurred_at: float | None = None  # when it happened (Unix seconds); created_at unless told
    session: str | None = None


class UpdatedResponse(BaseModel):
    id: str
    seq: int
    memory: MemoryRecordOut


class HistoryEntry(BaseModel):
    event: str
    old_text: str | None
    new_text: str | None
    old_tier: str | None
    new_tier: str | None
    actor: str
    at: float
    seq: int
    occurred_at: float | None = None  # the memory's event time after this change


class HistoryResponse(BaseModel):
    id: str
    history: list[HistoryEntry]


class ConsolidateRequest(OpenAIModel):
    user: Annotated[str | None, UserCheck] = Field(default=None, min_length=1, max_length=MAX_USER_CHARS)


class ForgetResponse(BaseModel):
    user: str
    deleted: bool = True
    seq: int


class SearchResult(BaseModel):
    """One memory found. A connected memory (`include_connections`) follows the top k with
    `connected_to` (the result it hangs off) and `connection` (`session`: a neighbouring turn
    of its conversation; `related`: close in meaning when written); its `score` is its own
    cosine to the query."""

    id: str
    text: str
    score: float
    tier: str
    metadata: dict[str, Any]
    created_at: float
    occurred_at: float | None = None
    session: str | None = None
    connected_to: str | None = None
    connection: Literal["session", "related"] | None = None

    @classmethod
    def of(cls, hit: SearchHit) -> SearchResult:
        return cls(id=hit.id, text=hit.text, score=hit.score, tier=hit.tier, metadata=hit.metadata,
                   created_at=hit.created_at, occurred_at=hit.occurred_at, session=hit.session,
                   connected_to=hit.connected_to, connection=hit.connection)


class SearchMemoriesResponse(BaseModel):
    results: list[SearchResult]


class MemoryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MemoryRecordOut]
    next_cursor: str | None = None


class DeletedResponse(BaseModel):
    id: str
    deleted: bool = True
    seq: int
