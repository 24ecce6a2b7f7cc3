"""Tenant management, admin keys only: list tenants, and create or delete tenants at runtime.

A runtime tenant's key is returned once by `POST /v1/tenants` and stored only as its
SHA-256 digest (the store's key-value space `tenants`); every replica accepts it within
`tenants.REFRESH_S`. Deleting a tenant revokes its keys; its memories, documents and
catalog stay in the store, and its name stays taken so no new tenant inherits them.
Tenants of the YAML or the environment are listed but changed only there.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serve_app.errors import APIError
from serve_app.protocol import ErrorResponse, RateLimitIn, TenantCreated, TenantCreateRequest, TenantList, TenantOut
from serve_app.routes.validation import StrictRoute
from serve_app.runtime import AdminDep, RuntimeDep
from serve_app.settings import RateLimitSettings
from serve_app.tenants import Tenant

router = APIRouter(tags=["tenants"], route_class=StrictRoute)

_CREATE_409 = "The name is taken (names of deleted tenants stay taken), or auth is off."
_DELETE_409 = "The tenant is configured in the YAML or the environment; it is changed there."


def _out(tenant: Tenant) -> TenantOut:
    limit = tenant.rate_limit
    return TenantOut(name=tenant.name, admin=tenant.admin, keys=len(tenant.digests), source=tenant.source,
                     rate_limit=RateLimitIn(**limit.model_dump()) if limit else None, created_at=tenant.created_at)


@router.get("/v1/tenants", response_model=TenantList)
async def list_tenants(rt: RuntimeDep, _: AdminDep) -> TenantList:
    return TenantList(data=[_out(t) for t in await rt.tenants.tenants()])


@router.post("/v1/tenants", response_model=TenantCreated, status_code=201,
             responses={409: {"model": ErrorResponse, "description": _CREATE_409}})
async def create_tenant(body: TenantCreateRequest, rt: RuntimeDep, _: AdminDep) -> TenantCreated:
    limit = RateLimitSettings(**body.rate_limit.model_dump()) if body.rate_limit else None
    tenant, key = await rt.tenants.create(body.name, body.admin, limit)
    return TenantCreated(tenant=_out(tenant), api_key=key)


@router.delete("/v1/tenants/{name}", responses={409: {"model": ErrorResponse, "description": _DELETE_409}})
async def delete_tenant(name: str, rt: RuntimeDep, _: AdminDep) -> dict[str, Any]:
    if not await rt.tenants.delete(name):
        raise APIError(404, f"no runtime tenant {name}", "name", "tenant_not_found")
    return {"name": name, "deleted": True}
