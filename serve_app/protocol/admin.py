"""Shapes of the operator endpoints: the product catalog load, cache clearing, health.

`Product` is also what `serve_app.catalog` stores, so a CSV row and a JSON product go
through the same validators.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from serve_app.protocol.common import MAX_USER_CHARS, TENANT_NAME, OpenAIModel, UserCheck


class Product(OpenAIModel):
    name: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=4000)
    category: str = Field(default="", max_length=200)
    price: float = Field(ge=0)
    tags: list[str] = Field(default_factory=list)

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, v: Any) -> Any:
        return [t.strip() for t in v.replace(";", ",").split(",") if t.strip()] if isinstance(v, str) else v


class CatalogRequest(OpenAIModel):
    products: list[Product] = Field(min_length=1, max_length=10_000)


class CatalogResponse(BaseModel):
    count: int
    seq: int


class CacheClearRequest(OpenAIModel):
    """Nothing: every entry. `tenant`: that tenant's entries; with `user`, that user's
    (`user` alone: a user of the caller's own tenant)."""

    user: Annotated[str | None, UserCheck] = Field(default=None, min_length=1, max_length=MAX_USER_CHARS)
    tenant: str | None = Field(default=None, pattern=TENANT_NAME)


class RateLimitIn(OpenAIModel):
    requests_per_s: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class TenantCreateRequest(OpenAIModel):
    name: str = Field(pattern=TENANT_NAME)
    admin: bool = False
    rate_limit: RateLimitIn | None = None


class TenantOut(BaseModel):
    """A tenant as admins see it: how many keys it has, never the keys or their digests."""

    name: str
    admin: bool
    keys: int
    source: Literal["config", "env", "runtime"]
    rate_limit: RateLimitIn | None = None
    created_at: float | None = None


class TenantList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TenantOut]


class TenantCreated(BaseModel):
    tenant: TenantOut
    api_key: str = Field(description="shown once: only its SHA-256 digest is stored")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
