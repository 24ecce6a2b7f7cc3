"""Orchestrator deployment: the HTTP ingress. It owns no model; it fans each request out
to the other deployments through typed clients over the handles the builder gives it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Histogram

from serve_app.app import create_app
from serve_app.clients import Clients, HandleEndpoint
from serve_app.logs import install_request_id_logging
from serve_app.runtime import build_runtime
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

# Milliseconds: cache hits and hops at the low end, whole generations at the high end.
LATENCY_BUCKETS_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000]


class RayMetricsSink:
    """Exports every stage and request timing to Ray's metrics (Prometheus, the Ray
    dashboard's Grafana panels) as `ray_memserve_operation_ms{operation=...}`; Ray adds the
    deployment and replica tags, so the replicas of a scaled Orchestrator add up there."""

    def __init__(self) -> None:
        self._histogram = Histogram(
            "memserve_operation_ms", description="memserve request stages and requests, in milliseconds",
            boundaries=LATENCY_BUCKETS_MS, tag_keys=("operation",),
        )

    def __call__(self, operation: str, value_ms: float) -> None:
        self._histogram.observe(value_ms, tags={"operation": operation})


@serve.deployment(name="Orchestrator", ray_actor_options={"num_cpus": 0.25})
@serve.ingress()
class Orchestrator:
    def __init__(
        self,
        settings: AppSettings,
        embedder: DeploymentHandle[Any],
        shards: list[DeploymentHandle[Any]],
        llm: DeploymentHandle[Any],
        cache: DeploymentHandle[Any],
        consolidator: DeploymentHandle[Any],
    ) -> None:
        install_request_id_logging()
        clients = Clients.over(
            embedder=HandleEndpoint(embedder), shards=[HandleEndpoint(s) for s in shards], llm=HandleEndpoint(llm),
            cache=HandleEndpoint(cache), consolidator=HandleEndpoint(consolidator), cache_settings=settings.cache,
        )
        self.runtime = build_runtime(settings, clients, settings.open_store(), RayMetricsSink())
        logger.info("Orchestrator ready: %d shards", len(shards))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray Serve calls this after __init__: the app is built with this replica's runtime."""
        return create_app(self.runtime)
