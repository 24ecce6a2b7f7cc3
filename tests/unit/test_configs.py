"""Every shipped config is valid before anyone deploys it: Ray Serve's schema, memserve's
typed settings, one deployment entry per graph node, and the KubeRay manifest in step
with configs/gpu.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.settings import AppSettings

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def graph_nodes(settings: AppSettings) -> set[str]:
    shards = {f"VectorSearch_{i}" for i in range(settings.vector_search.num_shards)}
    return {"Orchestrator", "Embedder", "LLM", "Cache", "Consolidator"} | shards


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_is_a_valid_memserve_app(path: Path) -> None:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["import_path"] == "serve_app.builder:build_app"
    settings = AppSettings.model_validate(app["args"])
    named = {d["name"] for d in app["deployments"]}
    assert named == graph_nodes(settings), "every node of the graph is configured, and nothing else"


def test_kuberay_manifest_serves_the_gpu_config() -> None:
    documents = list(yaml.safe_load_all((REPO / "k8s" / "rayservice.yaml").read_text()))
    service = next(d for d in documents if d["kind"] == "RayService")
    served = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert served["applications"] == yaml.safe_load((REPO / "configs" / "gpu.yaml").read_text())["applications"]
    redis = next(d for d in documents if d["kind"] == "Service" and d["metadata"]["name"] == "memserve-redis")
    # The URL's password is a `${MEMSERVE_REDIS_PASSWORD}` placeholder each replica fills in
    # from its pod's environment (k8s/rayservice.yaml): compare where it points.
    store_url = urlsplit(served["applications"][0]["args"]["store"]["redis_url"])
    assert (store_url.scheme, store_url.hostname, store_url.port) == (
        "redis", redis["metadata"]["name"], redis["spec"]["ports"][0]["port"]
    )
