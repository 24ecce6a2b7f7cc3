"""The wire protocol: pydantic models of every request and response body.

OpenAI-compatible shapes for `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`
and `/v1/models`; memserve's own shapes for `/v1/memories*`. Nothing here knows how a
request is served (that lives in `serve_app.pipeline` and the deployments).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

TIERS = ("working", "short_term", "long_term", "episodic", "semantic")
Tier = Literal["working", "short_term", "long_term", "episodic", "semantic"]

MAX_K = 50
MAX_USER_CHARS = 256
SYSTEM_PREFIX = "__"


def check_user(user: str | None) -> str | None:
    """Ids starting with "__" name system namespaces (the product catalog); no caller
    may read or write them. Control characters are refused too."""
    if user is None:
        return None
    if user.startswith(SYSTEM_PREFIX):
        raise ValueError(f"user ids may not start with {SYSTEM_PREFIX!r}")
    if any(ord(c) < 32 for c in user):
        raise ValueError("user ids may not contain control characters")
    return user


UserCheck = AfterValidator(check_user)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class OpenAIModel(BaseModel):
    """Request bodies accept (and ignore) OpenAI fields memserve does not implement."""

    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --------------------------------------------------------------------------- memserve options


class MemserveOptions(OpenAIModel):
    """The `memserve` object a client sends with `extra_body`."""

    memory: bool = True
    k: int | None = Field(default=None, ge=1, le=MAX_K)
    write_back: bool | None = None
    tiers: list[Tier] | None = None
    cache: bool = True
    products: bool = True
    knowledge: bool = True
    fanout: bool | None = Field(default=None, description="override server.fanout (benchmarks)")


class MemoryUsed(BaseModel):
    id: str
    text: str
    score: float
    tier: str


class ProductOut(BaseModel):
    id: str
    name: str
    description: str
    category: str
    price: float
    tags: list[str]
    score: float


class SourceOut(BaseModel):
    """A knowledge-base chunk an answer used."""

    document_id: str
    filename: str
    chunk_index: int
    page: int | None = None
    rows: list[int] | None = None
    score: float
    text: str


class MemserveInfo(BaseModel):
    """The `memserve` object of a response: what memory did and how long each stage took."""

    memories: list[MemoryUsed] = Field(default_factory=list)
    products: list[ProductOut] = Field(default_factory=list)
    sources: list[SourceOut] = Field(default_factory=list)
    quick_replies: list[str] = Field(default_factory=list)
    intent: str | None = None
    cached: bool = False
    cache: Literal["exact", "semantic", "single_flight"] | None = None
    cache_similarity: float | None = None
    degraded: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)


# --------------------------------------------------------------------------- chat


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class SamplingFields(OpenAIModel):
    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="memserve generates one choice")
    user: Annotated[str | None, UserCheck] = Field(default=None, min_length=1, max_length=MAX_USER_CHARS)
    memserve: MemserveOptions = Field(default_factory=MemserveOptions)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return stops


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _has_text(self) -> ChatCompletionRequest:
        if not any(m.text().strip() for m in self.messages):
            raise ValueError("messages must contain some text")
        return self

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user" and message.text().strip():
                return message.text()
        return self.messages[-1].text()


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("memserve accepts exactly one prompt per request")
            v = v[0]
        if not v.strip():
            raise ValueError("prompt must not be empty")
        return v

    def token_budget(self) -> int | None:
        return self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    memserve: MemserveInfo


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    memserve: MemserveInfo | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    memserve: MemserveInfo | None = None


# --------------------------------------------------------------------------- embeddings / models


class EmbeddingRequest(OpenAIModel):
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _as_list(cls, v: str | list[str]) -> list[str]:
        texts = [v] if isinstance(v, str) else v
        if len(texts) > 2048:
            raise ValueError("at most 2048 inputs per request")
        if any(not t.strip() for t in texts):
            raise ValueError("inputs must not be empty strings")
        return texts


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "memserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --------------------------------------------------------------------------- memories


UserId = str


class MemoryIn(OpenAIModel):
    text: str = Field(min_length=1)
    tier: Tier = "long_term"
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddMemoriesRequest(OpenAIModel):
    """One memory (`text` or chat `messages`) or a batch (`memories`)."""

    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    text: str | None = None
    messages: list[ChatMessage] | None = None
    memories: list[MemoryIn] | None = Field(default=None, max_length=1000)
    tier: Tier = "long_term"
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    dedup: bool = Field(default=True, description="merge near-duplicates into existing memories")

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


class AddMemoriesResponse(BaseModel):
    ids: list[str]
    seq: int


class MemoryFilters(OpenAIModel):
    metadata: dict[str, Any] = Field(default_factory=dict, description="equality on each key")
    created_after: float | None = None
    created_before: float | None = None


class SearchMemoriesRequest(OpenAIModel):
    user: Annotated[str, UserCheck] = Field(min_length=1, max_length=MAX_USER_CHARS)
    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=MAX_K)
    tiers: list[Tier] | None = None
    filters: MemoryFilters = Field(default_factory=MemoryFilters)
    min_seq: int | None = Field(default=None, ge=0)


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


class Product(OpenAIModel):
    name: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=4000)
    category: str = Field(default="", max_length=200)
    price: float = Field(ge=0)
    tags: list[str] = Field(default_factory=list)

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, v: Any) -> Any:
        return [t.strip() for t in v.replace(";", ",").split(",") if t.strip()] if isinstance(v, str) else v


class CatalogRequest(OpenAIModel):
    products: list[Product] = Field(min_length=1, max_length=10_000)


class CatalogResponse(BaseModel):
    count: int
    seq: int


class CacheClearRequest(OpenAIModel):
    user: Annotated[str | None, UserCheck] = Field(default=None, min_length=1, max_length=MAX_USER_CHARS)


class DocumentAccepted(BaseModel):
    job_id: str
    document_id: str


class JobOut(BaseModel):
    id: str
    document_id: str
    filename: str
    status: Literal["queued", "running", "done", "failed"]
    chunks_done: int
    chunks_total: int
    error: str | None


class DocumentOut(BaseModel):
    id: str
    filename: str
    scope: str
    chunks: int
    created_at: float


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
