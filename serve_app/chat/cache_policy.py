"""Which cached answers a request may be given: its cache key and semantic group.

Keys are `scope:version:digest` (see `serve_app.core.response_cache`): the scope is the
user's when memory is used (`shared` otherwise), the version is the user's memory version,
and the digest covers the model, the conversation, the sampling and memserve options, and
the versions of the catalog and knowledge base the answer could draw on. The semantic
group is the same but without the conversation text.

Every request field that can change the answer is in the digest (`_request_payload`),
so two requests that differ in any of them never share a cached answer. Some answers
are not cached at all (`replayable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_app.chat.plan import ChatInput, Plan, Request
from serve_app.core.response_cache import cache_key, digest

SHARED_SCOPE = "shared"


@dataclass(frozen=True)
class CacheKeys:
    key: str
    group: str


def cache_keys(chat: ChatInput, plan: Plan, memory_version: int, source_versions: list[int]) -> CacheKeys:
    scope = f"user:{plan.user}" if plan.memory else SHARED_SCOPE
    # "last week" names other days tomorrow: the range the query resolved to is part of the key.
    about = plan.time_range
    recall = [plan.connections, None if about is None else [about.start, about.end, about.month]]
    payload = {**_request_payload(chat), "sources": source_versions, "recall": recall}
    group = f"{scope}:{memory_version}:{digest({**payload, 'messages': None, 'prompt': None})}"
    return CacheKeys(cache_key(scope, memory_version, payload), group)


def replayable(request: Request) -> bool:
    """Whether the cache may store this request's answer and answer it from the cache.

    The cache holds one choice's text, split as it streamed, and its token counts: what
    a replay needs to stream or return that choice again. Not `n` > 1 (the choices are
    independent samples; storing them would need a multi-choice entry, and a request for
    several samples wants fresh ones) and not logprobs (per-token data the entry does not
    keep; replaying without it would answer a different request). Such requests skip the
    cache both ways and take no single-flight claim.
    """
    return request.n == 1 and request.logprob_count() is None


def _request_payload(chat: ChatInput) -> dict[str, Any]:
    request, opts = chat.request, chat.request.memserve
    return {
        "model": request.model,
        "messages": chat.messages,
        "prompt": chat.query if chat.messages is None else None,
        "sampling": [request.temperature, request.top_p, request.token_budget(), request.stops(), request.seed,
                     request.presence_penalty, request.frequency_penalty, request.repetition_penalty,
                     request.top_k, request.min_p, request.logit_bias],
        "choices": [request.n, request.logprob_count()],
        "format": [request.json_object(), request.json_schema()],
        "memory": [opts.memory, opts.k, opts.tiers],
        "products": opts.products,
        "knowledge": opts.knowledge,
    }
