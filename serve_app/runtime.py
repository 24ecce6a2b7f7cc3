"""The composition root: everything one Orchestrator replica serves requests with.

`build_runtime` wires the services over the deployment clients it is given (Ray handles
in the Orchestrator, local objects in unit tests); routers reach the result through
`RuntimeDep`. Nothing else constructs services.

Tenants: the Runtime `build_runtime` returns is the default tenant's; `for_tenant(name)`
gives another tenant's, wired the same way over that tenant's `Namespace` (its cache
prefix, Embedder cache namespace, catalog space and knowledge scopes), built once per
replica and tenant. `RuntimeDep` hands a route the runtime of the caller's tenant (the
`Principal` the auth middleware put in the ASGI scope), so routes only turn the user ids
they are given into stored ones with `rt.namespace` and back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from serve_app.catalog import SPACE as CATALOG_SPACE
from serve_app.catalog import CatalogService
from serve_app.chat.pipeline import ChatPipeline
from serve_app.chat.stages import ChatStages
from serve_app.clients import Clients
from serve_app.core.metrics import Metrics, MetricsSink
from serve_app.core.store import MemoryStore
from serve_app.decisions import DecisionService
from serve_app.errors import APIError
from serve_app.extraction_service import ExtractionService
from serve_app.knowledge import KnowledgeService
from serve_app.memory_service import MemoryService
from serve_app.settings import AppSettings
from serve_app.tenants import DEFAULT_TENANT, OPEN_PRINCIPAL, PRINCIPAL_KEY, Namespace, Principal, TenantDirectory


@dataclass(frozen=True)
class Runtime:
    settings: AppSettings
    clients: Clients
    pipeline: ChatPipeline
    memory: MemoryService
    catalog: CatalogService
    knowledge: KnowledgeService
    extraction: ExtractionService
    metrics: Metrics
    started: int
    tenancy: Tenancy = field(repr=False, compare=False)
    namespace: Namespace = field(default_factory=Namespace)

    @property
    def tenants(self) -> TenantDirectory:
        return self.tenancy.directory

    def for_tenant(self, tenant: str) -> Runtime:
        """The runtime of `tenant` (this one if it is this runtime's tenant)."""
        return self if tenant == self.namespace.tenant else self.tenancy.runtime(tenant)

    def check_model(self, model: str, kind: str = "llm") -> None:
        """404 for a model this server does not serve, as OpenAI answers."""
        known = self.settings.llm.served_model_name if kind == "llm" else self.settings.embedder.served_model_name
        if model != known:
            raise APIError(404, f"The model `{model}` does not exist; this server serves `{known}`.", "model",
                           "model_not_found")

    async def deployment_stats(self) -> dict[str, Any]:
        """Embedder cache counters and each shard's log position and loaded users."""
        embedder, shards = await asyncio.gather(self.clients.embedder.stats(), self.clients.retriever.stats())
        return {"embedder_cache": embedder, "shards": shards}


@dataclass
class Tenancy:
    """What every tenant's runtime of one replica shares, and those runtimes."""

    settings: AppSettings
    clients: Clients
    store: MemoryStore
    metrics: Metrics
    directory: TenantDirectory
    started: int
    runtimes: dict[str, Runtime] = field(default_factory=dict, repr=False, compare=False)

    def runtime(self, tenant: str) -> Runtime:
        if tenant not in self.runtimes:
            self.runtimes[tenant] = _wire(self, Namespace(tenant))
        return self.runtimes[tenant]


def build_runtime(
    settings: AppSettings, clients: Clients, store: MemoryStore, metrics_sink: MetricsSink | None = None,
) -> Runtime:
    """Wire the request logic of one replica over the given deployment clients; the
    result is the default tenant's runtime."""
    tenancy = Tenancy(settings, clients, store, Metrics(sink=metrics_sink),
                      TenantDirectory.from_settings(settings.server, store), int(time.time()))
    return tenancy.runtime(DEFAULT_TENANT)


def _wire(tenancy: Tenancy, ns: Namespace) -> Runtime:
    settings, store, metrics = tenancy.settings, tenancy.store, tenancy.metrics
    clients = replace(tenancy.clients, cache=tenancy.clients.cache.scoped(ns.cache_prefix),
                      embedder=tenancy.clients.embedder.scoped(ns.embedding_namespace))
    memory = MemoryService(store, clients.embedder, clients.retriever, clients.cache, settings.memory,
                           settings.server.embed_timeout_s + settings.server.search_timeout_s)
    catalog = CatalogService(store, clients.embedder, settings.embedder.dimension, ns.space(CATALOG_SPACE))
    knowledge = KnowledgeService(store, clients.embedder, clients.retriever, settings.documents, ns)
    decisions = DecisionService(settings.decision, clients.embedder, catalog)
    stages = ChatStages(settings, clients.embedder, clients.retriever, clients.cache, memory, knowledge, decisions,
                        catalog)
    pipeline = ChatPipeline(stages, clients.generator, clients.cache, memory, metrics)
    extraction = ExtractionService(memory, clients.generator, settings.memory)
    return Runtime(settings=settings, clients=clients, pipeline=pipeline, memory=memory, catalog=catalog,
                   knowledge=knowledge, extraction=extraction, metrics=metrics, started=tenancy.started,
                   tenancy=tenancy, namespace=ns)


# The dependencies below are `async def` though they never wait: FastAPI runs a plain `def`
# dependency in a worker thread, a thread hop per dependency on every request.


async def principal(conn: HTTPConnection) -> Principal:
    """The caller, as the auth middleware (`serve_app.auth`) found it."""
    found = conn.scope.get(PRINCIPAL_KEY)
    if isinstance(found, Principal):
        return found
    rt: Runtime = conn.app.state.runtime
    if rt.tenants.enabled:  # a route the middleware let through unauthenticated (/health) has no caller
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
    return OPEN_PRINCIPAL


PrincipalDep = Annotated[Principal, Depends(principal)]


async def runtime(conn: HTTPConnection) -> Runtime:
    """The runtime of the caller's tenant."""
    rt: Runtime = conn.app.state.runtime
    return rt.for_tenant((await principal(conn)).tenant)


RuntimeDep = Annotated[Runtime, Depends(runtime)]


async def admin(caller: PrincipalDep) -> Principal:
    """Admin routes: a key of a tenant with `admin: true` (any caller when auth is off)."""
    if not caller.admin:
        raise APIError(403, "this endpoint needs an admin API key", code="admin_required")
    return caller


AdminDep = Annotated[Principal, Depends(admin)]
