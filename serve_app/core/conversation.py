"""What a conversation turn is indexed by: the turn with the context a person remembers it in.

A reply ("Yes, last Tuesday!") means little alone; a person remembers it with the day it was
said and what it answered. A memory written with a `session` is therefore embedded and
BM25-indexed by its *index text*, the turn's text between the session's date and the turn it
follows, while the memory's stored and returned `text` stays exactly what was said. Memories
written without a session are indexed by their text alone.
"""

from __future__ import annotations

from serve_app.core.temporal import format_day

# The previous turn is context, not content: enough of it to say what it was about.
MAX_CONTEXT_CHARS = 300


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def index_text(text: str, occurred_at: float | None, replying_to: str | None) -> str:
    """'[Monday 8 May 2023] Caroline: Yes, last Tuesday! (in reply to Melanie: When ...?)'."""
    parts = [f"[{format_day(occurred_at)}]"] if occurred_at is not None else []
    parts.append(text)
    if replying_to and replying_to.strip():
        parts.append(f"(in reply to {_clip(replying_to, MAX_CONTEXT_CHARS)})")
    return " ".join(parts)
