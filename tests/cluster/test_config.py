"""configs/cluster.yaml holds what the live tests here rely on, checked without a cluster:
the Redis store and cache, more shards than one machine's config, the engine and the ingress
on the head, every other stage free to move, and a minimum that fits on the head alone (so
losing the worker node leaves room for Serve to start everything it hosted there). And what
a client is told when a replica dies under a call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.exceptions import ActorDiedError, ActorUnavailableError

from scripts.cluster import HEAD_RESOURCES, WORKER_RESOURCES
from serve_app.errors import to_error
from serve_app.settings import AppSettings

REPO = Path(__file__).resolve().parents[2]
HEAD_CPUS = WORKER_CPUS = 1  # scripts/cluster.py: `ray start --num-cpus 1` on each node
PINNED = {"LLM", "Orchestrator"}


def load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / "configs" / name).read_text())
    return config


def deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in load("cluster.yaml")["applications"][0]["deployments"]}


def replicas(d: dict[str, Any], bound: str) -> int:
    return int(d["autoscaling_config"][bound] if "autoscaling_config" in d else d["num_replicas"])


def test_redis_store_and_cache_from_the_environment() -> None:
    args = AppSettings.model_validate(load("cluster.yaml")["applications"][0]["args"])
    assert args.store.backend == "redis" and args.cache.backend == "redis"
    assert args.store.redis_url == "${MEMSERVE_REDIS_URL}/0" and args.cache.redis_url == "${MEMSERVE_REDIS_URL}/1"
    local = AppSettings.model_validate(load("local.yaml")["applications"][0]["args"])
    assert args.vector_search.num_shards > local.vector_search.num_shards


def test_engine_and_ingress_on_the_head_everything_else_free_to_move() -> None:
    config = load("cluster.yaml")
    assert config["proxy_location"] == "HeadOnly"  # one proxy: the nodes share this machine's ports
    for name, d in deployments().items():
        resources = d["ray_actor_options"].get("resources", {})
        assert not set(resources) & set(WORKER_RESOURCES), f"{name} would be stuck on the worker"
        if name in PINNED:
            assert set(resources) == set(HEAD_RESOURCES), name
        else:
            assert not resources, f"{name} could not move to the head when the worker is lost"
        if name not in {"LLM", "Consolidator"}:
            assert replicas(d, "min_replicas") >= 2, f"{name} must keep a replica when one is lost"


def test_minimum_fits_on_the_head_alone_and_maximum_on_the_cluster() -> None:
    ds = deployments().values()
    minimum = sum(d["ray_actor_options"]["num_cpus"] * replicas(d, "min_replicas") for d in ds)
    maximum = sum(d["ray_actor_options"]["num_cpus"] * replicas(d, "max_replicas") for d in ds)
    assert minimum <= HEAD_CPUS, f"the minimum ({minimum} CPU) does not fit on the head"
    assert maximum <= HEAD_CPUS + WORKER_CPUS, f"the maximum ({maximum} CPU) does not fit on the cluster"
    head_only = sum(d["ray_actor_options"]["resources"]["memserve_head"] * replicas(d, "max_replicas")
                    for d in ds if d["name"] in PINNED)
    assert head_only <= HEAD_RESOURCES["memserve_head"]


@pytest.mark.parametrize("died", [ActorDiedError(), ActorUnavailableError("the actor is unavailable", b"0" * 16)],
                         ids=["died", "unreachable"])
def test_a_replica_lost_under_a_call_is_a_retryable_503(died: Exception) -> None:
    error = to_error(died)
    assert (error.status, error.code) == (503, "unavailable")
    assert error.response().headers["retry-after"] == "1"
