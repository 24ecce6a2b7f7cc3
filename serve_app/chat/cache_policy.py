"""Which cached answers a request may be given: its cache key and semantic group.

Keys are `scope:version:digest` (see `serve_app.core.response_cache`): the scope is the
user's when memory is used (`shared` otherwise), the version is the user's memory version,
and the digest covers the model, the conversation, the sampling and memserve options, and
the versions of the catalog and knowledge base the answer could draw on. The semantic
group is the same but without the conversation text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_app.chat.plan import ChatInput, Plan
from serve_app.core.response_cache import cache_key, digest

SHARED_SCOPE = "shared"


@dataclass(frozen=True)
class CacheKeys:
    key: str
    group: str


def cache_keys(chat: ChatInput, plan: Plan, memory_version: int, source_versions: list[int]) -> CacheKeys:
    scope = f"user:{plan.user}" if plan.memory else SHARED_SCOPE
    payload = {**_request_payload(chat), "sources": source_versions}
    group = f"{scope}:{memory_version}:{digest({**payload, 'messages': None, 'prompt': None})}"
    return CacheKeys(cache_key(scope, memory_version, payload), group)


def _request_payload(chat: ChatInput) -> dict[str, Any]:
    request, opts = chat.request, chat.request.memserve
    return {
        "model": request.model,
        "messages": chat.messages,
        "prompt": chat.query if chat.messages is None else None,
        "sampling": [request.temperature, request.top_p, request.token_budget(), request.stop, request.seed],
        "memory": [opts.memory, opts.k, opts.tiers],
        "products": opts.products,
        "knowledge": opts.knowledge,
    }
