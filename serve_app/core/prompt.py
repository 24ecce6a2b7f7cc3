"""Prompt assembly: the caller's messages with their memories in the system turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def memory_block(memories: Sequence[str]) -> str:
    if not memories:
        return ""
    lines = "\n".join(f"- {m}" for m in memories)
    return f"Things you know about this user from earlier conversations:\n{lines}"


def product_block(products: Sequence[Any]) -> str:
    """Products the answer may recommend (objects with name, price, category, description)."""
    if not products:
        return ""
    lines = "\n".join(f"- {p.name} (${p.price:g}, {p.category}): {p.description}" for p in products)
    return f"Products from our catalog you may recommend:\n{lines}"


def build_messages(
    system_prompt: str, messages: Sequence[dict[str, str]], memories: Sequence[str], extra: str = ""
) -> list[dict[str, str]]:
    """Merge the service prompt, the memories, any extra context (products) and the
    caller's system turns into one leading system message (small chat templates handle
    a single system turn best)."""
    system_parts = [system_prompt] if system_prompt else []
    system_parts += [m["content"] for m in messages if m["role"] in ("system", "developer") and m["content"]]
    system_parts += [block for block in (memory_block(memories), extra) if block]
    turns = [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m["role"] in ("user", "assistant", "tool") and m["content"]
    ]
    head = [{"role": "system", "content": "\n\n".join(system_parts)}] if system_parts else []
    return head + turns


def knowledge_block(sources: Sequence[Any]) -> str:
    """Knowledge-base excerpts (objects with filename, page, text), numbered."""
    if not sources:
        return ""
    lines = "\n".join(
        f"[{i}] ({s.filename}{f', page {s.page}' if s.page else ''}) {s.text}" for i, s in enumerate(sources, 1)
    )
    return f"Excerpts from the knowledge base:\n{lines}"


def completion_prompt(prompt: str, memories: Sequence[str], extra: str = "") -> str:
    """A plain completion has no system turn: notes and context go in front of the prompt."""
    notes = "\n".join(f"- {m}" for m in memories)
    head = "\n\n".join(x for x in (f"Relevant notes:\n{notes}" if memories else "", extra) if x)
    return f"{head}\n\n{prompt}" if head else prompt
