"""Prompt assembly: the caller's messages with what memserve adds in the system turn.

What memserve adds (memories, knowledge excerpts, products) travels to the LLM deployment
as a `PromptContext`, apart from the caller's messages, because only there is the
tokenizer that can fit it into the model's context (`core.budget`); the caller's own
messages are never cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptContext:
    """Lines memserve puts in a prompt, each list most important first (memories by score,
    excerpts by similarity, products as chosen), so trimming drops from the end."""

    memories: tuple[str, ...] = ()
    knowledge: tuple[str, ...] = ()
    products: tuple[str, ...] = ()

    @classmethod
    def of(cls, memories: Sequence[str], sources: Sequence[Any], products: Sequence[Any]) -> PromptContext:
        """From memory texts, knowledge sources (filename, page, text) and products
        (name, price, category, description)."""
        return cls(
            memories=tuple(memories),
            knowledge=tuple(f"({s.filename}{f', page {s.page}' if s.page else ''}) {s.text}" for s in sources),
            products=tuple(f"{p.name} (${p.price:g}, {p.category}): {p.description}" for p in products),
        )

    @property
    def empty(self) -> bool:
        return not (self.memories or self.knowledge or self.products)

    def extra(self) -> str:
        """The knowledge and product blocks (a completion puts them after its notes)."""
        return "\n\n".join(b for b in (knowledge_block(self.knowledge), product_block(self.products)) if b)


def memory_block(memories: Sequence[str]) -> str:
    if not memories:
        return ""
    lines = "\n".join(f"- {m}" for m in memories)
    return f"Things you know about this user from earlier conversations:\n{lines}"


def knowledge_block(excerpts: Sequence[str]) -> str:
    """Knowledge-base excerpts, numbered so an answer can cite them."""
    if not excerpts:
        return ""
    lines = "\n".join(f"[{i}] {text}" for i, text in enumerate(excerpts, 1))
    return f"Excerpts from the knowledge base:\n{lines}"


def product_block(products: Sequence[str]) -> str:
    if not products:
        return ""
    lines = "\n".join(f"- {p}" for p in products)
    return f"Products from our catalog you may recommend:\n{lines}"


def build_messages(
    system_prompt: str, messages: Sequence[dict[str, str]], context: PromptContext = PromptContext()
) -> list[dict[str, str]]:
    """Merge the service prompt, the caller's system turns and the context into one leading
    system message (small chat templates handle a single system turn best)."""
    system_parts = [system_prompt] if system_prompt else []
    system_parts += [m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"]]
    system_parts += [block for block in (memory_block(context.memories), context.extra()) if block]
    turns = [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m["role"] in ("user", "assistant", "tool") and m["content"]
    ]
    head = [{"role": "system", "content": "\n\n".join(system_parts)}] if system_parts else []
    return head + turns


def completion_prompt(prompt: str, context: PromptContext = PromptContext()) -> str:
    """A plain completion has no system turn: notes and context go in front of the prompt."""
    notes = "\n".join(f"- {m}" for m in context.memories)
    head = "\n\n".join(x for x in (f"Relevant notes:\n{notes}" if notes else "", context.extra()) if x)
    return f"{head}\n\n{prompt}" if head else prompt
