"""Shapes and checks every part of the wire protocol shares.

The request base of memserve's own bodies (unknown fields refused), the user-id rules
that keep callers out of system namespaces, the error envelope and the limits: one
place, so the OpenAI, memory and document modules cannot drift apart on them.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from serve_app.protocol.rules import Checked, from_setting

# A memory tier's name. Which names exist is configuration (`memory.tiers`, checked by the
# tier registry with a 400 naming the configured tiers), so the wire type is a plain name.
Tier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$",
                            json_schema_extra=from_setting(enum="memory.tiers"))]

MAX_K = 50
MAX_USER_CHARS = 256
SYSTEM_PREFIX = "__"
# A tenant's name (serve_app/tenants.py): no separator or control character can be in it.
TENANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

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


# What `check_user` allows, stated in the schema: no "__" prefix, no control character.
USER_PATTERN = r"^(?:[^_\u0000-\u001f]|_[^_\u0000-\u001f]|_$)[^\u0000-\u001f]*$"
UserCheck = Checked(check_user, pattern=USER_PATTERN)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


MAX_SEQ = 2**63 - 1  # SQLite's largest integer: a seq or cursor above it cannot be stored


class OpenAIModel(BaseModel):
    """The base of memserve's own request bodies (memories, catalog, cache): strict, like
    the OpenAI ones (`protocol.strict.StrictModel`). An unknown field, or an unknown key of
    a nested model such as `filters`, fails as pydantic's `extra_forbidden`, answered 400
    `unknown_parameter` with its dotted path as `param` (`serve_app.routes.validation`), so
    a misspelt filter never silently widens a search. Free-form dicts (`metadata`) take any key.
    Types are JSON's, as the schema says: no coercion (`"5"` is not an integer, `0` not a
    boolean; an integer is a number). NaN and Infinity (which JSON does not have, but
    Python's parser reads) are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
