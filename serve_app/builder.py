"""The one place that wires the deployment graph, from typed settings.

    serve run configs/local.yaml        # import_path: serve_app.builder:build_app

Ray Serve validates the YAML `args:` into `AppSettings`; per-deployment options
(replicas, autoscaling, resources) come from the YAML `deployments:` list by name:
Orchestrator, Embedder, VectorSearch_<i>, LLM, Cache, Consolidator.
"""
# No `from __future__ import annotations`: Ray Serve reads build_app's annotation at run time.

from pathlib import Path
from typing import cast

from ray.serve import Application, Deployment

from deployments.cache import Cache
from deployments.consolidator import Consolidator
from deployments.embedder import Embedder
from deployments.llm import LLM
from deployments.orchestrator import Orchestrator
from deployments.vector_search import VectorSearch
from serve_app.settings import AppSettings


def shard_deployment_name(shard: int) -> str:
    return f"VectorSearch_{shard}"


def _deployment(cls: type) -> Deployment:
    """The Deployment that `@serve.deployment` made of `cls` at import. mypy types a
    decorated class as the class itself (it ignores class decorators' return types)."""
    return cast(Deployment, cls)


def build_app(args: AppSettings) -> Application:
    # The annotation lets Ray Serve validate the YAML `args`; direct callers may pass a dict.
    args = AppSettings.model_validate(args) if isinstance(args, dict) else args
    # Replicas may run in another working directory: pin relative paths here.
    settings = args.model_copy(update={"data_dir": str(Path(args.data_dir).expanduser().resolve())})
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)

    embedder = _deployment(Embedder).bind(settings.embedder)
    shards = [
        _deployment(VectorSearch).options(name=shard_deployment_name(i)).bind(settings, i)
        for i in range(settings.vector_search.num_shards)
    ]
    llm = _deployment(LLM).bind(settings.llm)
    cache = _deployment(Cache).bind(settings.cache)
    consolidator = _deployment(Consolidator).bind(settings)
    return _deployment(Orchestrator).bind(settings, embedder, shards, llm, cache, consolidator)
