"""Fit what memserve adds to a prompt into the model's context, in tokens.

Enough long memories or excerpts would otherwise make a short question fail with
`context_length_exceeded`. The caller's own messages are never cut: only the context is,
least important first (products from the last, then knowledge excerpts from the last,
then memories from the lowest ranked), and the caller is told how many of each went.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from serve_app.core.prompt import PromptContext

# Dropped first to last: the kinds of context, each trimmed from its end.
TRIM_ORDER = ("products", "knowledge", "memories")


@dataclass(frozen=True)
class Trimmed:
    """How many items of each kind were left out of the prompt."""

    memories: int = 0
    knowledge: int = 0
    products: int = 0

    def __add__(self, other: Trimmed) -> Trimmed:
        return Trimmed(self.memories + other.memories, self.knowledge + other.knowledge,
                       self.products + other.products)

    def __bool__(self) -> bool:
        return bool(self.memories or self.knowledge or self.products)


def shed(context: PromptContext, tokens: int, cost: Callable[[str], int]) -> tuple[PromptContext, Trimmed]:
    """Drop items, least important first, until their estimated `cost` reaches `tokens`."""
    freed, dropped = 0, dict.fromkeys(TRIM_ORDER, 0)
    lists = {kind: list(getattr(context, kind)) for kind in TRIM_ORDER}
    for kind in TRIM_ORDER:
        items = lists[kind]
        while items and freed < tokens:
            freed += cost(items.pop())
            dropped[kind] += 1
    kept = replace(context, **{kind: tuple(items) for kind, items in lists.items()})
    return kept, Trimmed(**dropped)


def fit(
    context: PromptContext, render: Callable[[PromptContext], list[int]], budget: int, cost: Callable[[str], int],
) -> tuple[list[int], PromptContext, Trimmed]:
    """The prompt's tokens with as much context as fits in `budget` tokens.

    `render` tokenizes the whole prompt for a context; `cost` estimates one item's tokens
    (the exact count depends on its neighbours, so the result is re-rendered and checked).
    A prompt that is too long without any context is returned as is: that is the caller's
    to fix, and the engine answers it with `context_length_exceeded`.
    """
    trimmed = Trimmed()
    tokens = render(context)
    while len(tokens) > budget and not context.empty:
        context, step = shed(context, len(tokens) - budget, cost)
        trimmed += step
        tokens = render(context)
    return tokens, context, trimmed
