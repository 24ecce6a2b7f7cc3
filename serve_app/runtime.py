"""The composition root: everything one Orchestrator replica serves requests with.

`build_runtime` wires the services over the deployment clients it is given (Ray handles
in the Orchestrator, local objects in unit tests); routers reach the result through
`RuntimeDep`. Nothing else constructs services.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from serve_app.catalog import CatalogService
from serve_app.chat.pipeline import ChatPipeline
from serve_app.chat.stages import ChatStages
from serve_app.clients import Clients
from serve_app.core.metrics import Metrics, MetricsSink
from serve_app.core.store import MemoryStore
from serve_app.decisions import DecisionService
from serve_app.errors import APIError
from serve_app.knowledge import KnowledgeService
from serve_app.memory_service import MemoryService
from serve_app.settings import AppSettings


@dataclass(frozen=True)
class Runtime:
    settings: AppSettings
    clients: Clients
    pipeline: ChatPipeline
    memory: MemoryService
    catalog: CatalogService
    knowledge: KnowledgeService
    metrics: Metrics
    started: int

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


def build_runtime(
    settings: AppSettings, clients: Clients, store: MemoryStore, metrics_sink: MetricsSink | None = None,
) -> Runtime:
    """Wire the request logic of one replica over the given deployment clients."""
    memory = MemoryService(store, clients.embedder, clients.retriever, clients.cache, settings.memory)
    catalog = CatalogService(store, clients.embedder, settings.embedder.dimension)
    knowledge = KnowledgeService(store, clients.embedder, clients.retriever, settings.documents)
    decisions = DecisionService(settings.decision, clients.embedder, catalog)
    metrics = Metrics(sink=metrics_sink)
    stages = ChatStages(settings, clients.embedder, clients.retriever, clients.cache, memory, knowledge, decisions,
                        catalog)
    pipeline = ChatPipeline(stages, clients.generator, clients.cache, memory, metrics)
    return Runtime(settings=settings, clients=clients, pipeline=pipeline, memory=memory, catalog=catalog,
                   knowledge=knowledge, metrics=metrics, started=int(time.time()))


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]
