"""OpenAI-compatible shapes: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`
and `/v1/models`, plus the `memserve` extension object they carry both ways.

Kept field-for-field with OpenAI's API so stock clients (the `openai` SDK, LangChain)
work unchanged; memserve's additions live only under the `memserve` key. Request models
are strict (`protocol.strict`): a field is implemented, refused with a 400 naming it, or
on the documented ignore-list. The sampling fields and logprobs shapes are in
`protocol.sampling`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.core.retrieval import SearchHit
from serve_app.protocol.common import MAX_K, Tier, new_id
from serve_app.protocol.rules import MESSAGE_WITH_TEXT, NON_BLANK, from_setting, only_if, rules
from serve_app.protocol.sampling import (
    MAX_N,
    MAX_TOP_LOGPROBS,
    SAMPLING_RULES,
    TOKEN_LIMIT,
    ChatLogprobs,
    CompletionLogprobs,
    ResponseFormat,
    SamplingFields,
)
from serve_app.protocol.strict import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    IGNORED_CHAT_FIELDS,
    INVALID,
    MESSAGE_FIELDS,
    UNSUPPORTED,
    StrictModel,
    field_error,
)

# --------------------------------------------------------------------------- memserve options


class MemserveOptions(StrictModel):
    """The `memserve` object a client sends with `extra_body`; an unknown key is a 400."""

    memory: bool = True
    k: int | None = Field(default=None, ge=1, le=MAX_K)
    write_back: bool | None = None
    tiers: list[Tier] | None = None
    include_connections: bool = Field(default=False, description=(
        "also put in the prompt up to memory.max_connections memories connected to the ones found "
        "(the turns around them in their conversation, memories related to them)"))
    cache: bool = True
    products: bool = True
    knowledge: bool = True
    fanout: bool | None = Field(default=None, description="override server.fanout (benchmarks)")


class MemoryUsed(BaseModel):
    id: str
    text: str
    score: float
    tier: str

    @classmethod
    def of(cls, hit: SearchHit) -> MemoryUsed:
        return cls(id=hit.id, text=hit.text, score=hit.score, tier=hit.tier)


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


# Which response-cache layer answered a request.
CacheKind = Literal["exact", "semantic", "single_flight"]


class TrimmedOut(BaseModel):
    """How many memories, knowledge excerpts and products did not fit the model's context
    beside the caller's messages and the answer, and were left out of the prompt."""

    memories: int = 0
    knowledge: int = 0
    products: int = 0


class MemserveInfo(BaseModel):
    """The `memserve` object of a response: what memory did and how long each stage took.
    `memories`, `sources` and `products` list what the prompt held; `trimmed` counts what
    was left out for the context window (absent when nothing was)."""

    memories: list[MemoryUsed] = Field(default_factory=list)
    products: list[ProductOut] = Field(default_factory=list)
    sources: list[SourceOut] = Field(default_factory=list)
    quick_replies: list[str] = Field(default_factory=list)
    intent: str | None = None
    cached: bool = False
    cache: CacheKind | None = None
    cache_similarity: float | None = None
    degraded: list[str] = Field(default_factory=list)
    trimmed: TrimmedOut | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)


# --------------------------------------------------------------------------- chat


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    """`name` is accepted and not rendered (the chat template has no slot for it)."""

    unsupported = MESSAGE_FIELDS

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    unsupported = CHAT_FIELDS
    ignored = IGNORED_CHAT_FIELDS
    model_config = ConfigDict(json_schema_extra=rules(*SAMPLING_RULES, only_if("top_logprobs", "logprobs", True)))

    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra={"contains": MESSAGE_WITH_TEXT})
    max_completion_tokens: int | None = Field(default=None, ge=1, json_schema_extra=TOKEN_LIMIT)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    memserve: MemserveOptions = Field(default_factory=MemserveOptions)

    @model_validator(mode="after")
    def _has_text(self) -> ChatCompletionRequest:
        if not any(m.text().strip() for m in self.messages):
            raise ValueError("messages must contain some text")
        if self.top_logprobs is not None and not self.logprobs:
            raise field_error(INVALID, "top_logprobs", "top_logprobs requires logprobs to be true")
        return self

    def logprob_count(self) -> int | None:
        """None: no logprobs; k: the chosen token's and its k most likely alternatives."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def json_schema(self) -> dict[str, Any] | None:
        fmt = self.response_format
        return fmt.json_schema.schema_ if fmt is not None and fmt.json_schema is not None else None

    def json_object(self) -> bool:
        return self.response_format is not None and self.response_format.type == "json_object"

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def last_user_text(self) -> str:
        """The latest user text, else the latest text of any role (never empty: `_has_text`)."""
        for message in reversed(self.messages):
            if message.role == "user" and message.text().strip():
                return message.text()
        return next(m.text() for m in reversed(self.messages) if m.text().strip())


# `best_of` is taken only as a no-op: null, or the same as `n` (1 when n is not given).
_BEST_OF_IS_N = {"anyOf": [
    {"not": {"required": ["best_of"]}}, {"properties": {"best_of": {"type": "null"}}},
    {"not": {"required": ["n"]}, "properties": {"best_of": {"const": 1}}},
    *({"required": ["n"], "properties": {"n": {"const": n}, "best_of": {"const": n}}} for n in range(1, MAX_N + 1)),
]}


class CompletionRequest(SamplingFields):
    unsupported = COMPLETION_FIELDS
    model_config = ConfigDict(json_schema_extra=rules(*SAMPLING_RULES, {"not": {
        "required": ["echo", "logprobs"], "properties": {"echo": {"const": True}, "logprobs": {"type": "integer"}}}},
        _BEST_OF_IS_N))

    prompt: str | list[str] = Field(json_schema_extra={
        "pattern": NON_BLANK, "minItems": 1, "maxItems": 1, "items": {"type": "string", "pattern": NON_BLANK}})
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    memserve: MemserveOptions = Field(default_factory=MemserveOptions)

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

    @model_validator(mode="after")
    def _no_prompt_logprobs(self) -> CompletionRequest:
        """With `echo`, OpenAI's logprobs cover the prompt's tokens too; the engine's prompt
        is not the caller's (memories are prepended), so those cannot be given honestly."""
        if self.echo and self.logprobs is not None:
            raise field_error(UNSUPPORTED, "logprobs", "logprobs with echo (prompt logprobs) are not supported")
        return self

    def token_budget(self) -> int | None:
        return self.max_tokens

    def logprob_count(self) -> int | None:
        return self.logprobs

    def json_schema(self) -> dict[str, Any] | None:
        return None

    def json_object(self) -> bool:
        return False


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
    logprobs: ChatLogprobs | None = None


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
    logprobs: ChatLogprobs | None = None


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
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    memserve: MemserveInfo | None = None


# --------------------------------------------------------------------------- embeddings / models


class EmbeddingRequest(StrictModel):
    """`dimensions` is accepted only as the model's own size (checked by the route):
    MiniLM's vectors cannot be shortened."""

    model: str = Field(json_schema_extra=from_setting(enum="embedder.served_model_name"))  # else a 404
    input: str | list[str] = Field(min_length=1, json_schema_extra={
        "pattern": NON_BLANK, "minItems": 1, "maxItems": 2048, "items": {"type": "string", "pattern": NON_BLANK}})
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1, json_schema_extra=from_setting(enum="embedder.dimension"))] | None = None
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
