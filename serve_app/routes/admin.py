"""Operator endpoints: the health probe, response-cache control, metrics, catalog load.

`/health` is the one route left open when API keys are on (load balancers and KubeRay
probe it without credentials); see `serve_app.auth`. Every other route here needs an admin
key (`AdminDep`: a tenant with `admin: true`; anyone when auth is off). Cache stats and
metrics cover every tenant; the catalog and a cache clear act on the caller's tenant, or
on the one named by `tenant`. Bodies are strict: an unknown field is a 400
`unknown_parameter` naming it (`StrictRoute`; the catalog maps its own errors).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from serve_app.catalog import parse_csv
from serve_app.errors import APIError, validation_message
from serve_app.openapi import component
from serve_app.protocol import (
    TENANT_NAME,
    CacheClearRequest,
    CatalogRequest,
    CatalogResponse,
    ErrorResponse,
    HealthResponse,
    Product,
)
from serve_app.routes.validation import StrictRoute, loads, request_error
from serve_app.runtime import AdminDep, Runtime, RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["admin"], route_class=StrictRoute)


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get("/v1/cache/stats")
async def cache_stats(rt: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    return await rt.clients.cache.stats()


# An admin naming a tenant that does not exist (`tenant`).
_NO_TENANT: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No tenant of that name."}}


@router.post("/v1/cache/clear", responses=_NO_TENANT)
async def cache_clear(rt: RuntimeDep, _: AdminDep, body: CacheClearRequest | None = None) -> dict[str, Any]:
    body = body or CacheClearRequest()
    if body.user is None and body.tenant is None:
        return {"cleared": await rt.tenancy.clients.cache.clear(None), "scope": "all"}
    target = await _tenant(rt, body.tenant)
    scope = f"user:{target.namespace.user(body.user)}" if body.user else None
    shown = f"user:{body.user}" if body.user else "all"
    return {"cleared": await target.clients.cache.clear(scope), "scope": shown, "tenant": target.namespace.tenant}


@router.get("/v1/metrics")
async def metrics(rt: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    return {"operations": rt.metrics.summary(), **await rt.deployment_stats()}


# The body is read by hand (JSON or CSV), so FastAPI cannot document it.
_CATALOG_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": component(CatalogRequest, "validation")},
    "text/csv": {"schema": {"type": "string", "description": "a header row naming at least `name` and `price` "
                            "(any of name, description, category, price, tags; other columns are ignored), then "
                            "one row per product"}},
}}}


@router.post("/v1/catalog", response_model=CatalogResponse, openapi_extra=_CATALOG_BODY, responses=_NO_TENANT)
async def load_catalog(
    request: Request, rt: RuntimeDep, _: AdminDep,
    tenant: Annotated[str | None, Query(pattern=TENANT_NAME, description="default: the caller's tenant")] = None,
) -> CatalogResponse:
    """JSON `{products: [...]}` or a CSV body (text/csv) with a header row: the catalog
    of the caller's tenant, or of `tenant`."""
    products = _parse_catalog(await request.body(), request.headers.get("content-type", ""))
    if not products:
        raise APIError(400, "the catalog has no products", "products")
    count, seq = await (await _tenant(rt, tenant)).catalog.load(products)
    return CatalogResponse(count=count, seq=seq)


async def _tenant(rt: Runtime, name: str | None) -> Runtime:
    """The runtime of the tenant an admin names (404 for an unknown one), or the caller's."""
    return rt.for_tenant((await rt.tenants.named(name)).name) if name else rt


def _parse_catalog(raw: bytes, content_type: str) -> list[Product]:
    """The body is read by hand (it may be CSV), so its validation errors are ours to map."""
    try:
        if "csv" in content_type:
            return parse_csv(raw)
        return CatalogRequest.model_validate(loads(raw)).products
    except ValidationError as exc:
        unknown = request_error(exc.errors())  # e.g. `products.0.colour`
        raise unknown or APIError(400, f"invalid catalog: {validation_message(exc)[0]}", "products") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"invalid catalog: {exc}", "products") from None
