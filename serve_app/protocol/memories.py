"""memserve's own shapes for `/v1/memories*` and `DELETE /v1/users/{user}`.

Every request that names a user passes `UserCheck`, so no body can reach the system
namespaces (the catalog, the knowledge base) through the memory API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from serve_app.core.retrieval import SearchHit
from serve_app.protocol.common import MAX_K, MAX_SEQ, MAX_USER_CHARS, OpenAIModel, Tier, UserCheck
from serve_app.protocol.openai import ChatMessage


class MemoryIn(OpenAIModel):
    text: str = Field(min_length=1)
    tier: Tier | None = Field(default=None, description="default: the server's memory.default_tier")
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddMemoriesRequest(OpenAIModel):
    """One memory (`text` or chat `messages`) or a batch (`memories`)."""

    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    text: str | None = None
    messages: list[ChatMessage] | None = None
    memories: list[MemoryIn] | None = Field(default=None, max_length=1000)
    tier: Tier | None = Field(default=None, description="default: the server's memory.default_tier")
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    dedup: bool = Field(default=True, description="merge restatements into existing memories")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> AddMemoriesRequest:
        given = [x is not None for x in (self.text, self.messages, self.memories)]
        if sum(given) != 1:
            raise ValueError("give exactly one of text, messages or memories")
        if not self.items():
            raise ValueError("nothing to remember: the text is empty")
        return self

    def items(self) -> list[MemoryIn]:
        if self.memories is not None:
            return self.memories
        if self.text is not None:
            texts = [self.text] if self.text.strip() else []
        else:
            texts = [f"{m.role}: {m.text()}" for m in self.messages or [] if m.text().strip()]
        return [
            MemoryIn(text=t, tier=self.tier, importance=self.importance, metadata=self.metadata)
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


class AddMemoriesResponse(BaseModel):
    ids: list[str]  # one per item, in order (`results[i].id`), kept for older clients
    seq: int  # the last write's seq; when every item is a NOOP, the user's current version
    results: list[MemoryWriteResult] = Field(default_factory=list)


class MemoryFilters(OpenAIModel):
    """Its own keys are fixed (an unknown one is a 400); `metadata` takes the user's own keys."""

    metadata: dict[str, Any] = Field(default_factory=dict, description="equality on each key")
    created_after: float | None = None
    created_before: float | None = None


class SearchMemoriesRequest(OpenAIModel):
    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=MAX_K)
    tiers: list[Tier] | None = None
    filters: MemoryFilters = Field(default_factory=MemoryFilters)
    min_seq: int | None = Field(default=None, ge=0, le=MAX_SEQ)


class UpdateMemoryRequest(OpenAIModel):
    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    text: str | None = Field(default=None, min_length=1)
    importance: float | None = Field(default=None, ge=0.0, le=1.0)
    metadata: dict[str, Any] | None = None
    tier: Tier | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateMemoryRequest:
        if all(v is None for v in (self.text, self.importance, self.metadata, self.tier)):
            raise ValueError("give at least one of text, importance, metadata or tier")
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


class HistoryResponse(BaseModel):
    id: str
    history: list[HistoryEntry]


class ConsolidateRequest(OpenAIModel):
    user: str | None = Field(default=None, min_length=1, max_length=MAX_USER_CHARS)


class ForgetResponse(BaseModel):
    user: str
    deleted: bool = True
    seq: int


class SearchResult(BaseModel):
    id: str
    text: str
    score: float
    tier: str
    metadata: dict[str, Any]
    created_at: float

    @classmethod
    def of(cls, hit: SearchHit) -> SearchResult:
        return cls(id=hit.id, text=hit.text, score=hit.score, tier=hit.tier, metadata=hit.metadata,
                   created_at=hit.created_at)


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
