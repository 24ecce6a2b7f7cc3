"""Messages passed between the Orchestrator and the LLM deployment.

Plain dataclasses (cheap to pickle through Ray) so deployments share types without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serve_app.core.budget import Trimmed
from serve_app.core.prompt import PromptContext


class PromptTooLongError(ValueError):
    """The rendered prompt plus the token budget does not fit the model's context."""


class InvalidGenerationRequest(ValueError):
    """The engine refused the request's sampling parameters (e.g. a `logit_bias` token id
    outside the vocabulary, which only the engine knows). The Orchestrator answers 400
    naming `param`. It crosses a Ray boundary, hence `__reduce__` (two arguments)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.param))


@dataclass(frozen=True)
class GenerationRequest:
    """What the LLM deployment needs to generate, in OpenAI's terms (None = engine default).

    The caller's `messages` (or `prompt`) travel as sent, with the service's `system_prompt`
    and memserve's `context` beside them: the LLM deployment assembles the prompt, because
    only its tokenizer can fit the context into the model's window (`core.budget`).
    `logprobs`: None for no logprobs, else how many alternatives to return per token (0 =
    only the chosen token's). `json_schema` / `json_object` constrain the output (vLLM
    structured outputs); `logit_bias` maps token ids to a bias in [-100, 100].
    """

    request_id: str
    messages: list[dict[str, str]] | None = None  # chat: rendered with the model's template
    prompt: str | None = None  # plain completion
    system_prompt: str = ""
    context: PromptContext = field(default_factory=PromptContext)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    n: int = 1
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    logit_bias: dict[int, float] | None = None
    logprobs: int | None = None
    json_schema: dict[str, Any] | None = None
    json_object: bool = False


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log probability and the `top` most likely tokens
    at its position (most likely first)."""

    token: str
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)


@dataclass
class GenerationChunk:
    """One streamed step of choice `index`: `text` is the new text since that choice's
    previous chunk, `logprobs` the tokens it came from (when asked for).
    `completion_tokens` counts that choice's tokens so far. The first chunk of an answer
    says what of the context did not fit the model's window (`trimmed`)."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    index: int = 0
    logprobs: list[TokenLogprob] | None = None
    trimmed: Trimmed | None = None


@dataclass
class GenerationResult:
    """One whole choice."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    chunks: list[str] = field(default_factory=list)
    index: int = 0
    logprobs: list[TokenLogprob] | None = None

    @classmethod
    def collect(cls, chunks: list[GenerationChunk], index: int = 0) -> GenerationResult:
        """Choice `index` from the chunks of all choices."""
        mine = [c for c in chunks if c.index == index]
        last = mine[-1] if mine else GenerationChunk(text="", index=index)
        logprobs = [t for c in mine for t in c.logprobs or []] if any(c.logprobs is not None for c in mine) else None
        return cls(
            text="".join(c.text for c in mine),
            finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            chunks=[c.text for c in mine if c.text],
            index=index,
            logprobs=logprobs,
        )

    @classmethod
    def collect_all(cls, chunks: list[GenerationChunk]) -> list[GenerationResult]:
        """Every choice, in index order (at least choice 0)."""
        return [cls.collect(chunks, i) for i in sorted({0, *(c.index for c in chunks)})]

    def cacheable(self) -> dict[str, Any]:
        """The form the response cache stores (JSON-safe for the Redis backend). Only
        single-choice answers without logprobs are cached (`chat.cache_policy.replayable`),
        so the text and counts are all a replay needs."""
        return {"text": self.text, "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "chunks": list(self.chunks)}
