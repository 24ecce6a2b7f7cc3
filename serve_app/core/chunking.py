"""Split text into overlapping chunks that end on a paragraph or sentence boundary when
one is near, so a chunk rarely stops mid-sentence."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# Where a chunk may end, best first: a paragraph break, a sentence end, any whitespace.
_BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"[.!?][\"')\]]?\s"), re.compile(r"\s"))


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets in the source text
    end: int


def _cut(text: str, start: int, size: int, window: int) -> int:
    """End of the chunk starting at `start`: the last good boundary in the final `window`
    characters of the size limit, or the limit itself."""
    limit = start + size
    if limit >= len(text):
        return len(text)
    lo = max(start + 1, limit - window)
    for pattern in _BOUNDARIES:
        ends = [m.end() for m in pattern.finditer(text, lo, limit)]
        if ends:
            return ends[-1]
    return limit


def chunk_text(text: str, size: int = 500, overlap: int = 50, window: int | None = None) -> Iterator[Chunk]:
    """Chunks of at most `size` characters; each starts `overlap` characters before the
    previous one ended (moved forward to a word start)."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    window = window if window is not None else max(1, size // 4)
    start = 0
    while start < len(text):
        end = _cut(text, start, size, window)
        piece = text[start:end].strip()
        if piece:
            yield Chunk(piece, start, end)
        if end >= len(text):
            return
        next_start = max(end - overlap, start + 1)
        space = text.find(" ", next_start, end)  # do not begin mid-word
        start = space + 1 if overlap and space != -1 else next_start
