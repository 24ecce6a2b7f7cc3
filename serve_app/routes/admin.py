"""Operator endpoints: the health probe, response-cache control, metrics, catalog load.

`/health` is the one route left open when API keys are on (load balancers and KubeRay
probe it without credentials); see `serve_app.auth`. Bodies are strict: an unknown field
is a 400 `unknown_parameter` naming it (`StrictRoute`; the catalog maps its own errors).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from serve_app.catalog import parse_csv
from serve_app.errors import APIError, validation_message
from serve_app.protocol import CacheClearRequest, CatalogRequest, CatalogResponse, HealthResponse, Product
from serve_app.routes.validation import StrictRoute, request_error
from serve_app.runtime import RuntimeDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["admin"], route_class=StrictRoute)


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get("/v1/cache/stats")
async def cache_stats(rt: RuntimeDep) -> dict[str, Any]:
    return await rt.clients.cache.stats()


@router.post("/v1/cache/clear")
async def cache_clear(rt: RuntimeDep, body: CacheClearRequest | None = None) -> dict[str, Any]:
    scope = f"user:{body.user}" if body and body.user else None
    return {"cleared": await rt.clients.cache.clear(scope), "scope": scope or "all"}


@router.get("/v1/metrics")
async def metrics(rt: RuntimeDep) -> dict[str, Any]:
    return {"operations": rt.metrics.summary(), **await rt.deployment_stats()}


@router.post("/v1/catalog", response_model=CatalogResponse)
async def load_catalog(request: Request, rt: RuntimeDep) -> CatalogResponse:
    """JSON `{products: [...]}` or a CSV body (text/csv) with a header row."""
    products = _parse_catalog(await request.body(), request.headers.get("content-type", ""))
    if not products:
        raise APIError(400, "the catalog has no products", "products")
    count, seq = await rt.catalog.load(products)
    return CatalogResponse(count=count, seq=seq)


def _parse_catalog(raw: bytes, content_type: str) -> list[Product]:
    """The body is read by hand (it may be CSV), so its validation errors are ours to map."""
    try:
        if "csv" in content_type:
            return parse_csv(raw)
        return CatalogRequest.model_validate_json(raw).products
    except ValidationError as exc:
        unknown = request_error(exc.errors())  # e.g. `products.0.colour`
        raise unknown or APIError(400, f"invalid catalog: {validation_message(exc)[0]}", "products") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"invalid catalog: {exc}", "products") from None
