"""What one chat request asks for and what it will use, decided once up front."""

from __future__ import annotations

import time
from dataclasses import dataclass

from serve_app.core.temporal import TimeRange, parse_time_query
from serve_app.protocol import ChatCompletionRequest, CompletionRequest
from serve_app.settings import AppSettings

Request = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class ChatInput:
    """A chat or completion request, normalised: chat `messages` (None for a plain
    completion) and the `query` text that memories and knowledge are searched with."""

    request: Request
    messages: list[dict[str, str]] | None
    query: str

    @classmethod
    def of_chat(cls, request: ChatCompletionRequest) -> ChatInput:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        return cls(request, messages, request.last_user_text())

    @classmethod
    def of_completion(cls, request: CompletionRequest) -> ChatInput:
        prompt = request.prompt if isinstance(request.prompt, str) else request.prompt[0]  # validated to one
        return cls(request, None, prompt)


@dataclass(frozen=True)
class Plan:
    """Server settings merged with the request's `memserve` options."""

    fanout: bool
    user: str | None
    memory: bool
    decisions: bool
    cache: bool
    knowledge: bool
    write_back: bool
    k: int
    tiers: list[str] | None
    connections: int = 0  # connected memories to add after the top k (`include_connections`)
    time_range: TimeRange | None = None  # the time the query names, preferred when ranking memories

    @classmethod
    def of(cls, settings: AppSettings, chat: ChatInput, now: float | None = None) -> Plan:
        """`now` anchors relative times in the query ("last week"); the request's time by default."""
        request, opts = chat.request, chat.request.memserve
        memory = bool(request.user) and opts.memory
        write_back = opts.write_back if opts.write_back is not None else settings.memory.write_back
        return cls(
            fanout=settings.server.fanout if opts.fanout is None else opts.fanout,
            user=request.user,
            memory=memory,
            decisions=settings.decision.enabled and opts.products,
            cache=settings.cache.enabled and opts.cache,
            knowledge=opts.knowledge,
            write_back=memory and write_back,
            k=opts.k or settings.memory.default_k,
            tiers=list(opts.tiers) if opts.tiers else None,
            connections=settings.memory.max_connections if memory and opts.include_connections else 0,
            time_range=parse_time_query(chat.query, time.time() if now is None else now).range
            if memory and settings.memory.scoring.time_boost else None,
        )
