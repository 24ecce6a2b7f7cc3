"""The wire protocol: pydantic models of every request and response body.

Split by resource (`common`, `openai`, `memories`, `documents`, `admin`) in the style
of vLLM's `entrypoints/openai/protocol`; this package re-exports every name so callers
keep importing `from serve_app.protocol import X`. Nothing here knows how a request is
served (that lives in the pipeline, the services and the deployments).
"""

from __future__ import annotations

from serve_app.protocol.admin import (
    CacheClearRequest,
    CatalogRequest,
    CatalogResponse,
    HealthResponse,
    Product,
    RateLimitIn,
    TenantCreated,
    TenantCreateRequest,
    TenantList,
    TenantOut,
)
from serve_app.protocol.common import (
    MAX_K,
    MAX_SEQ,
    MAX_USER_CHARS,
    SYSTEM_PREFIX,
    TENANT_NAME,
    ErrorDetail,
    ErrorResponse,
    OpenAIModel,
    Tier,
    UserCheck,
    UserId,
    check_user,
    new_id,
)
from serve_app.protocol.documents import DocumentAccepted, DocumentList, DocumentOut, JobOut
from serve_app.protocol.memories import (
    AddMemoriesRequest,
    AddMemoriesResponse,
    ConsolidateRequest,
    DeletedResponse,
    ExtractedFact,
    ExtractionReport,
    ForgetResponse,
    HistoryEntry,
    HistoryResponse,
    MemoryFilters,
    MemoryIn,
    MemoryList,
    MemoryRecordOut,
    MemoryWriteResult,
    SearchMemoriesRequest,
    SearchMemoriesResponse,
    SearchResult,
    UpdatedResponse,
    UpdateMemoryRequest,
)
from serve_app.protocol.openai import (
    CacheKind,
    ChatChoice,
    ChatChoiceMessage,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    MemoryUsed,
    MemserveInfo,
    MemserveOptions,
    ModelCard,
    ModelList,
    ProductOut,
    SourceOut,
    TextPart,
    Usage,
)
from serve_app.protocol.sampling import (
    MAX_N,
    ChatLogprobs,
    CompletionLogprobs,
    ResponseFormat,
    SamplingFields,
    StreamOptions,
)
from serve_app.protocol.strict import StrictModel

__all__ = [
    "MAX_K", "MAX_N", "MAX_SEQ", "MAX_USER_CHARS", "SYSTEM_PREFIX", "TENANT_NAME", "AddMemoriesRequest",
    "AddMemoriesResponse", "CacheClearRequest", "CacheKind", "CatalogRequest", "CatalogResponse", "ChatChoice",
    "ChatChoiceMessage", "ChatChunkChoice", "ChatCompletionChunk", "ChatCompletionRequest", "ChatCompletionResponse",
    "ChatLogprobs", "ChatMessage", "CompletionChoice", "CompletionLogprobs", "CompletionRequest", "CompletionResponse",
    "ConsolidateRequest", "DeletedResponse", "DeltaMessage", "DocumentAccepted", "DocumentList", "DocumentOut",
    "EmbeddingData", "EmbeddingRequest", "EmbeddingResponse", "EmbeddingUsage", "ErrorDetail", "ErrorResponse",
    "ExtractedFact", "ExtractionReport",
    "ForgetResponse", "HealthResponse", "HistoryEntry", "HistoryResponse", "JobOut", "MemoryFilters", "MemoryIn",
    "MemoryList", "MemoryRecordOut", "MemoryUsed", "MemoryWriteResult", "MemserveInfo", "MemserveOptions", "ModelCard",
    "ModelList", "OpenAIModel", "Product", "ProductOut", "RateLimitIn", "ResponseFormat", "SamplingFields",
    "SearchMemoriesRequest", "SearchMemoriesResponse", "SearchResult", "SourceOut", "StreamOptions", "StrictModel",
    "TenantCreateRequest", "TenantCreated", "TenantList", "TenantOut", "TextPart", "Tier", "UpdateMemoryRequest",
    "UpdatedResponse", "Usage", "UserCheck", "UserId", "check_user", "new_id",
]
