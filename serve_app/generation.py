"""Messages passed between the Orchestrator and the LLM deployment.

Plain dataclasses (cheap to pickle through Ray) so deployments share types without
importing each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class PromptTooLongError(ValueError):
    """The rendered prompt plus the token budget does not fit the model's context."""


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    messages: list[dict[str, str]] | None = None  # chat: rendered with the model's template
    prompt: str | None = None  # plain completion
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None


@dataclass
class GenerationChunk:
    """One streamed step: `text` is the new text since the previous chunk."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class GenerationResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    chunks: list[str] = field(default_factory=list)

    @classmethod
    def collect(cls, chunks: list[GenerationChunk]) -> GenerationResult:
        last = chunks[-1] if chunks else GenerationChunk(text="")
        return cls(
            text="".join(c.text for c in chunks),
            finish_reason=last.finish_reason,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            chunks=[c.text for c in chunks if c.text],
        )

    def cacheable(self) -> dict[str, Any]:
        """The form the response cache stores (JSON-safe for the Redis backend)."""
        return asdict(self)
