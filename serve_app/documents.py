"""Typed records of the knowledge base, each owning its stored form.

`Document` is one registry entry (a JSON value in the store's `documents` key-value
space); `ChunkRef` is what a knowledge chunk's metadata says about where it came from.
Nothing else reads these fields by key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from serve_app.protocol import MAX_USER_CHARS, SourceOut, check_user

KB_PREFIX = "__kb__"


def kb_namespace(scope: str, shard: int) -> str:
    """The store namespace of a scope's chunks on one shard (callers cannot name it)."""
    return f"{KB_PREFIX}:{scope}:{shard}"


# `parse_scope` in the schema: `user:` and a user id (`protocol.USER_PATTERN`, at most MAX_USER_CHARS).
_CHAR, _FIRST = r"[^\u0000-\u001f]", r"[^_\u0000-\u001f]"
SCOPE_PATTERN = (rf"^(?:shared|user:(?:{_FIRST}{_CHAR}{{0,{MAX_USER_CHARS - 1}}}"
                 rf"|_{_FIRST}{_CHAR}{{0,{MAX_USER_CHARS - 2}}}|_))$")


def parse_scope(scope: str) -> str:
    """`shared` or `user:<id>`; raises ValueError otherwise."""
    if scope == "shared":
        return scope
    if scope.startswith("user:") and 5 < len(scope) <= 5 + MAX_USER_CHARS:
        check_user(scope[5:])
        return scope
    raise ValueError("scope must be 'shared' or 'user:<id>'")


@dataclass(frozen=True)
class Document:
    id: str
    filename: str
    scope: str
    chunks: int
    content_hash: str
    created_at: float
    chunk_ids: dict[int, list[str]] = field(default_factory=dict)  # shard -> chunk memory ids

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "chunk_ids": {str(k): v for k, v in self.chunk_ids.items()}})

    @classmethod
    def from_json(cls, text: str) -> Document:
        raw = json.loads(text)
        raw["chunk_ids"] = {int(k): v for k, v in raw.get("chunk_ids", {}).items()}
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})


@dataclass(frozen=True)
class ChunkRef:
    """Where a chunk came from, stored as its memory metadata."""

    document_id: str
    filename: str
    scope: str
    chunk_index: int
    page: int | None = None
    rows: list[int] | None = None

    def metadata(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, metadata: dict[str, Any]) -> ChunkRef:
        return cls(**{k: metadata.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]  # a foreign chunk's fields may be missing: None never matches a document

    def source(self, text: str, score: float) -> SourceOut:
        return SourceOut(document_id=self.document_id, filename=self.filename, chunk_index=self.chunk_index,
                         page=self.page, rows=self.rows, score=round(score, 4), text=text)
