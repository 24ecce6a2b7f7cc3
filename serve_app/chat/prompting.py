"""From a request and its context to the engine's request: the prompt and sampling.

Every OpenAI sampling field the request models accept is passed on here (the engine maps
them to vLLM's SamplingParams in `serve_app.engine.sampling_params`).
"""

from __future__ import annotations

import uuid

from serve_app.chat.plan import ChatInput
from serve_app.chat.stages import Context
from serve_app.core.prompt import PromptContext
from serve_app.generation import GenerationRequest
from serve_app.protocol import MemoryIn
from serve_app.settings import AppSettings, MemorySettings


def generation_request(settings: AppSettings, chat: ChatInput, context: Context) -> GenerationRequest:
    """The caller's messages (or prompt) as sent, with the memories, knowledge excerpts and
    products beside them; the LLM deployment puts them in the system turn of a chat, or in
    front of a plain completion's prompt, as far as they fit the model's window."""
    products = context.products.products if context.products else []
    request = chat.request
    return GenerationRequest(
        request_id=f"memserve-{uuid.uuid4().hex}", messages=chat.messages,
        prompt=chat.query if chat.messages is None else None, system_prompt=settings.server.system_prompt,
        context=PromptContext.of([m.text for m in context.memories], context.sources, products),
        max_tokens=request.token_budget(), temperature=request.temperature, top_p=request.top_p,
        stop=request.stops(), seed=request.seed, n=request.n, presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty, repetition_penalty=request.repetition_penalty,
        top_k=request.top_k, min_p=request.min_p, logit_bias=request.token_biases(),
        logprobs=request.logprob_count(), json_schema=request.json_schema(), json_object=request.json_object(),
    )


def write_back_item(settings: MemorySettings, query: str) -> MemoryIn:
    """The user's turn as a memory of the configured write-back tier."""
    return MemoryIn(text=query[: settings.max_text_chars], tier=settings.write_back_tier, metadata={"source": "chat"})
