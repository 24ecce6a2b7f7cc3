"""Shapes and checks every part of the wire protocol shares.

The request base of memserve's own bodies (unknown fields refused), the user-id rules
that keep callers out of system namespaces, the error envelope and the limits: one
place, so the OpenAI, memory and document modules cannot drift apart on them.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# A memory tier's name. Which names exist is configuration (`memory.tiers`, checked by the
# tier registry with a 400 naming the configured tiers), so the wire type is a plain name.
Tier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]

MAX_K = 50
MAX_USER_CHARS = 256
SYSTEM_PREFIX = "__"

UserId = str


def check_user(user: str | None) -> str | None:
    """Ids starting with "__" name system namespaces (the product catalog); no caller
    may read or write them. Control characters are refused too."""
    if user is None:
        return None
    if user.startswith(SYSTEM_PREFIX):
        raise ValueError(f"user ids may not start with {SYSTEM_PREFIX!r}")
    if any(ord(c) < 32 for c in user):
        raise ValueError("user ids may not contain control characters")
    return user


UserCheck = AfterValidator(check_user)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


MAX_SEQ = 2**63 - 1  # SQLite's largest integer: a seq or cursor above it cannot be stored


class OpenAIModel(BaseModel):
    """The base of memserve's own request bodies (memories, catalog, cache): strict, like
    the OpenAI ones (`protocol.strict.StrictModel`). An unknown field, or an unknown key of
    a nested model such as `filters`, fails as pydantic's `extra_forbidden`, answered 400
    `unknown_parameter` with its dotted path as `param` (`serve_app.routes.validation`), so
    a misspelt filter never silently widens a search. Free-form dicts (`metadata`) take any key."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
