"""The KubeRay deployment would actually schedule and run, checked without a cluster.

- the RayService validates against KubeRay's CRD (../shared/kuberay), converted to JSON
  Schema strictly: an unknown field is an error, as with `kubectl apply --validate=strict`;
- serveConfigV2 is a valid Ray Serve config and memserve app;
- the replicas fit the worker groups: first-fit-decreasing bin packing of every replica's
  CPUs, GPUs and memory onto nodes whose capacity is computed the way KubeRay passes it to
  `ray start`, at the minimum (minReplicas nodes) and at the maximum (maxReplicas nodes);
- the head takes no replicas, autoscaling is on, GCS fault tolerance uses the Redis with a
  password from a Secret, every image is pinned, Ray's version is the one pyproject pins;
- the Redis password is in the Secret only: every Ray pod gets it as MEMSERVE_REDIS_PASSWORD
  from that Secret, the Serve config carries the `${MEMSERVE_REDIS_PASSWORD}` placeholder;
- the Redis container's own arguments, run on a real redis-server, refuse clients without
  the password, accept the app's URLs as memserve expands them with the pods' variable, and
  KubeRay's GCS cleanup leaves memserve's keys alone;
- the Grafana dashboard queries only metrics memserve or the installed Ray Serve declare.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import redis
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.settings import AppSettings
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "k8s" / "rayservice.yaml"
DASHBOARD = REPO / "k8s" / "grafana-dashboard.json"
CRD = REPO.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"
PASSWORD_VAR = "MEMSERVE_REDIS_PASSWORD"
GiB = 1024**3


# ---------------------------------------------------------------- the manifest


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def rayservice() -> dict[str, Any]:
    return the("RayService")


def cluster() -> dict[str, Any]:
    spec: dict[str, Any] = rayservice()["spec"]["rayClusterConfig"]
    return spec


def serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(rayservice()["spec"]["serveConfigV2"])
    return config


def app_config() -> dict[str, Any]:
    (app,) = serve_config()["applications"]
    return dict(app)


def ray_container(pod_template: dict[str, Any]) -> dict[str, Any]:
    """KubeRay's Ray container is the first one (utils.RayContainerIndex)."""
    container: dict[str, Any] = pod_template["spec"]["containers"][0]
    return container


def all_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in documents():
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                yield f"Deployment/{doc['metadata']['name']}/{c['name']}", c
    spec = cluster()
    for c in spec["headGroupSpec"]["template"]["spec"]["containers"]:
        yield f"head/{c['name']}", c
    for group in spec["workerGroupSpecs"]:
        for c in group["template"]["spec"]["containers"]:
            yield f"{group['groupName']}/{c['name']}", c


def redis_service() -> tuple[str, int]:
    service = the("Service", "memserve-redis")
    return service["metadata"]["name"], int(service["spec"]["ports"][0]["port"])


def redis_container() -> dict[str, Any]:
    (container,) = the("Deployment", "memserve-redis")["spec"]["template"]["spec"]["containers"]
    return dict(container)


def env_source(container: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [e for e in container.get("env", []) if e["name"] == name]
    return dict(entry)


def flags(args: list[str]) -> dict[str, str]:
    """`["--a", "1", "--b", "x"]` -> {"a": "1", "b": "x"} (redis-server's argument style)."""
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), args
    return {k[2:]: v for k, v in zip(args[::2], args[1::2], strict=True)}


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data


def pinned(requirements: list[str], name: str) -> str:
    """The version `name==X` pins in a requirement list (extras allowed), or fail."""
    pattern = re.compile(rf"^{re.escape(name)}(\[[^\]]*\])?==([0-9][0-9A-Za-z.+]*)$")
    (version,) = [m.group(2) for r in requirements if (m := pattern.match(r.replace(" ", "")))]
    return version


def ray_pin() -> str:
    return pinned(pyproject()["project"]["dependencies"], "ray")


# ---------------------------------------------------------------- CRD -> JSON Schema


def crd_schema(crd: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    """The CRD's openAPIV3Schema as a strict JSON Schema (see ../shared/kuberay/README.md)."""
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return to_json_schema(served["schema"]["openAPIV3Schema"])


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        else:  # type, enum, required, pattern, format, default, bounds, description: as they are
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    # Strict: an object that lists its fields accepts no others, unless the CRD says so.
    preserved = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in node and not preserved:
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    if not CRD.exists():
        pytest.fail(f"{CRD} is missing: the KubeRay CRD is read from ../shared/kuberay")
    schema = crd_schema(yaml.safe_load(CRD.read_text()))
    jsonschema.Draft4Validator.check_schema(schema)  # OpenAPI v3.0's schemas are draft-4 style
    return jsonschema.Draft4Validator(schema)


def errors(validator: jsonschema.protocols.Validator, obj: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_the_manifest_holds_what_it_should() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in documents())
    assert kinds == [
        ("Deployment", "memserve-redis"),
        ("PersistentVolumeClaim", "memserve-redis-data"),
        ("RayService", "memserve"),
        ("Service", "memserve-redis"),
    ]
    for doc in documents():
        assert doc["apiVersion"] == {"RayService": "ray.io/v1", "Deployment": "apps/v1"}.get(doc["kind"], "v1")


def test_rayservice_validates_strictly_against_the_crd(validator: jsonschema.protocols.Validator) -> None:
    assert errors(validator, rayservice()) == []
    # KubeRay's own checks (ValidateRayServiceMetadata): a DNS-1035 name of at most 47 characters.
    name = rayservice()["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47


def test_the_redis_pod_template_validates_strictly_too(validator: jsonschema.protocols.Validator) -> None:
    """The CRD embeds Kubernetes' PodTemplateSpec (core/v1): the Redis Deployment's pod
    template is checked against it, as strictly."""
    spec = validator.schema["properties"]["spec"]["properties"]["rayClusterConfig"]["properties"]
    pod_template = jsonschema.Draft4Validator(spec["headGroupSpec"]["properties"]["template"])
    template = the("Deployment", "memserve-redis")["spec"]["template"]
    assert errors(pod_template, template) == []
    broken = copy.deepcopy(template)
    broken["spec"]["containers"][0]["readinessProbe"]["exec"]["comand"] = ["true"]
    assert errors(pod_template, broken)


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        (("spec", "rayClusterConfig"), "enableInTreeAutoscalling", True),  # misspelt
        (("spec",), "serveConfig", "applications: []"),  # the v1alpha1 field, gone in v1
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0), "minReplica", 1),
        (("spec", "rayClusterConfig", "gcsFaultToleranceOptions"), "redisPasword", {"value": "x"}),
        (("spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0), "imagePulPolicy", "Never"),
    ],
)
def test_a_misspelt_field_fails_validation(
    validator: jsonschema.protocols.Validator, path: tuple[str | int, ...], key: str, value: Any
) -> None:
    broken = copy.deepcopy(rayservice())
    node: Any = broken
    for step in path:
        node = node[step]
    node[key] = value
    assert any("Additional properties are not allowed" in e and key in e for e in errors(validator, broken))


def test_types_are_checked_too(validator: jsonschema.protocols.Validator) -> None:
    broken = copy.deepcopy(rayservice())
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    assert errors(validator, broken)
    fine = copy.deepcopy(rayservice())
    fine["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "cpu"
    ] = 8  # int-or-string: a quantity may be a number
    assert errors(validator, fine) == []


def test_the_conversion_handles_nullable_int_or_string_and_preserved_fields() -> None:
    schema = to_json_schema({
        "type": "object",
        "properties": {
            "when": {"type": "string", "nullable": True},
            "port": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
            "free": {
                "type": "object", "properties": {"a": {"type": "string"}}, "x-kubernetes-preserve-unknown-fields": True
            },
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    })
    ok = jsonschema.Draft4Validator(schema)
    assert ok.is_valid({"when": None, "port": 8080, "free": {"a": "x", "b": 1}, "labels": {"k": "v"}})
    assert ok.is_valid({"port": "http"})
    assert not ok.is_valid({"when": 1})
    assert not ok.is_valid({"port": 1.5})
    assert not ok.is_valid({"labels": {"k": 1}})
    assert not ok.is_valid({"other": 1})


# ---------------------------------------------------------------- serveConfigV2


def test_serve_config_is_a_valid_ray_serve_config_and_memserve_app() -> None:
    ServeDeploySchema.model_validate(serve_config())
    app = app_config()
    AppSettings.model_validate(app["args"])
    assert app["import_path"] == "serve_app.builder:build_app"


def test_every_stage_autoscales_and_the_ingress_sheds_with_503() -> None:
    singletons = {"Consolidator"}  # a background sweep by design (deployments/consolidator.py)
    for d in app_config()["deployments"]:
        assert "max_ongoing_requests" in d or d["name"] in singletons, d["name"]
        if d["name"] in singletons:
            assert d.get("num_replicas") == 1 and "autoscaling_config" not in d
            continue
        scaling = d["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"], d["name"]
        assert 0 < scaling["target_ongoing_requests"] <= d["max_ongoing_requests"], d["name"]
    (ingress,) = [d for d in app_config()["deployments"] if d["name"] == "Orchestrator"]
    assert ingress["max_queued_requests"] > 0
    assert ingress["backpressure_config"]["status_code"] == 503
    assert ingress["backpressure_config"]["retry_after_s"] > 0


# ---------------------------------------------------------------- resource fit

KINDS = ("CPU", "GPU", "memory")
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity(value: str | int | float) -> Fraction:
    """A Kubernetes resource quantity ("500m", "32Gi", "8", 1e9) as an exact number."""
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity: {value!r}"
    number, suffix = Fraction(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return number * 1024 ** _BINARY[suffix]
    if suffix[:1] in "eE" and suffix:
        return number * Fraction(10) ** int(suffix[1:])
    return number * Fraction(10) ** _DECIMAL[suffix]


def test_quantities() -> None:
    assert quantity("500m") == Fraction(1, 2)
    assert quantity("32Gi") == 32 * GiB
    assert quantity("1G") == 10**9
    assert quantity("1e3") == 1000
    assert quantity(8) == 8


@dataclass
class Group:
    name: str
    capacity: dict[str, float]  # what one node offers Ray: CPU, GPU, memory (bytes)
    min_nodes: int
    max_nodes: int


def node_capacity(ray_start_params: dict[str, str], container: dict[str, Any]) -> dict[str, float]:
    """What `ray start` gets on a node, as KubeRay builds it (setMissingRayStartParams and
    addWellKnownAcceleratorResources in ray-operator/controllers/ray/common/pod.go): an
    explicit rayStartParams value wins; else num-cpus is the container's CPU limit rounded
    up (its request without a limit), memory its memory limit, num-gpus its nvidia.com/gpu."""
    resources = container.get("resources", {})
    limits, requests = resources.get("limits", {}), resources.get("requests", {})
    if "num-cpus" in ray_start_params:
        cpu = float(ray_start_params["num-cpus"])
    else:
        assert "cpu" in limits or "cpu" in requests, "Ray would guess the CPUs: give the container a CPU limit"
        cpu = math.ceil(quantity(limits.get("cpu", requests.get("cpu"))))
    if "memory" in ray_start_params:
        memory = float(ray_start_params["memory"])
    else:
        assert "memory" in limits, "Ray would guess the memory: give the container a memory limit"
        memory = float(quantity(limits["memory"]))
    gpus = float(ray_start_params.get("num-gpus", quantity(limits.get("nvidia.com/gpu", 0))))
    return {"CPU": cpu, "GPU": gpus, "memory": memory}


def worker_groups() -> list[Group]:
    return [
        Group(g["groupName"], node_capacity(g["rayStartParams"], ray_container(g["template"])),
              int(g["minReplicas"]), int(g["maxReplicas"]))
        for g in cluster()["workerGroupSpecs"]
    ]


def replica_demand(deployment: dict[str, Any]) -> dict[str, float]:
    options = deployment["ray_actor_options"]
    # Explicit, so that the check does not depend on the decorators' defaults.
    assert "num_cpus" in options and "memory" in options, f"{deployment['name']}: set num_cpus and memory"
    return {
        "CPU": float(options["num_cpus"]), "GPU": float(options.get("num_gpus", 0)), "memory": float(options["memory"])
    }


def replica_counts(deployment: dict[str, Any]) -> tuple[int, int]:
    """(replicas at the start / at the least, replicas at the most)."""
    scaling = deployment.get("autoscaling_config")
    if scaling:
        low = scaling.get("initial_replicas") or scaling["min_replicas"]
        return max(low, scaling["min_replicas"]), scaling["max_replicas"]
    n = int(deployment.get("num_replicas", 1))
    return n, n


def fits(used: dict[str, float], item: dict[str, float], capacity: dict[str, float]) -> bool:
    return all(used[k] + item[k] <= capacity[k] + 1e-9 for k in KINDS)


def pack(items: list[tuple[str, dict[str, float]]], capacity: dict[str, float]) -> list[dict[str, float]]:
    """First-fit decreasing by dominant share: the nodes used, each with what it holds."""
    empty = dict.fromkeys(KINDS, 0.0)

    def dominant(item: dict[str, float]) -> float:
        return max(item[k] / capacity[k] for k in KINDS if capacity[k] > 0)

    nodes: list[dict[str, float]] = []
    for name, item in sorted(items, key=lambda it: dominant(it[1]), reverse=True):
        assert fits(empty, item, capacity), f"a {name} replica ({item}) fits no node ({capacity})"
        for used in nodes:
            if fits(used, item, capacity):
                for k in KINDS:
                    used[k] += item[k]
                break
        else:
            nodes.append(dict(item))
    return nodes


def test_packing_is_honest() -> None:
    cap = {"CPU": 8.0, "GPU": 0.0, "memory": 24.0}
    assert len(pack([("a", {"CPU": 5, "GPU": 0, "memory": 1})] * 2, cap)) == 2  # 10 CPUs: two nodes
    assert len(pack([("a", {"CPU": 1, "GPU": 0, "memory": 13})] * 2, cap)) == 2  # memory too
    assert len(pack([("a", {"CPU": 4, "GPU": 0, "memory": 12})] * 2, cap)) == 1
    with pytest.raises(AssertionError, match="fits no node"):
        pack([("gpu", {"CPU": 1, "GPU": 1, "memory": 1})], cap)


def placement(phase: int) -> dict[str, tuple[Group, list[dict[str, float]]]]:
    """Each group's packing at the minimum (phase 0) or maximum (phase 1) replica counts.
    GPU replicas go to the GPU group only, the rest to the CPU group only (the GPU nodes
    advertise one LLM replica exactly, so nothing else fits there anyway)."""
    groups = worker_groups()
    gpu_groups = [g for g in groups if g.capacity["GPU"] > 0]
    cpu_groups = [g for g in groups if g.capacity["GPU"] == 0]
    assert len(gpu_groups) == 1 and len(cpu_groups) == 1, [g.name for g in groups]
    items: dict[str, list[tuple[str, dict[str, float]]]] = {g.name: [] for g in groups}
    for d in app_config()["deployments"]:
        demand = replica_demand(d)
        group = gpu_groups[0] if demand["GPU"] > 0 else cpu_groups[0]
        items[group.name] += [(d["name"], demand)] * replica_counts(d)[phase]
    return {g.name: (g, pack(items[g.name], g.capacity)) for g in groups}


def test_minimum_replicas_fit_the_minimum_nodes() -> None:
    for name, (group, nodes) in placement(0).items():
        assert len(nodes) <= group.min_nodes, f"{name}: min replicas need {len(nodes)} nodes > {group.min_nodes}"


def test_maximum_replicas_fit_the_maximum_nodes() -> None:
    for name, (group, nodes) in placement(1).items():
        assert len(nodes) <= group.max_nodes, f"{name}: max replicas need {len(nodes)} nodes > {group.max_nodes}"


def test_the_llm_is_on_whole_gpus_and_the_gpu_nodes_hold_nothing_else() -> None:
    (llm,) = [d for d in app_config()["deployments"] if d["name"] == "LLM"]
    assert replica_demand(llm)["GPU"] == 1
    (gpu,) = [g for g in worker_groups() if g.capacity["GPU"] > 0]
    smallest_cpu_replica = min(
        (replica_demand(d) for d in app_config()["deployments"] if replica_demand(d)["GPU"] == 0),
        key=lambda r: (r["CPU"], r["memory"]),
    )
    left = {k: gpu.capacity[k] - replica_demand(llm)[k] for k in KINDS}
    assert not fits(dict.fromkeys(KINDS, 0.0), smallest_cpu_replica, left)
    assert app_config()["args"]["embedder"]["device"] == "cpu"


def test_what_ray_is_told_is_what_the_container_has() -> None:
    spec = cluster()
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        name = group.get("groupName", "head")
        params, container = group["rayStartParams"], ray_container(group["template"])
        resources = container["resources"]
        limits = resources["limits"]
        assert set(resources["requests"]) == set(limits), f"{name}: requests and limits for the same resources"
        for key in limits:  # Guaranteed QoS: the pod gets what Ray is told it has
            assert quantity(resources["requests"][key]) == quantity(limits[key]), f"{name}: {key}"
        if "num-cpus" in params:
            assert float(params["num-cpus"]) <= quantity(limits["cpu"]), name
        if "memory" in params:
            # Ray counts an explicit --memory whole for replicas; the object store (in /dev/shm,
            # charged to the container) and Ray's own processes need room besides.
            store = int(params["object-store-memory"])
            headroom = quantity(limits["memory"]) - int(params["memory"]) - store
            assert headroom >= 2 * GiB, f"{name}: {float(headroom / GiB):.1f} GiB left for raylet, agents, proxy"
            shm = [v for v in group["template"]["spec"].get("volumes", []) if v["name"] == "shm"]
            mounted = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
            assert shm and mounted, f"{name}: the object store needs a /dev/shm that big"
            assert shm[0]["emptyDir"]["medium"] == "Memory"
            assert quantity(shm[0]["emptyDir"]["sizeLimit"]) >= store


# ---------------------------------------------------------------- head, autoscaling, GCS FT


def test_the_head_takes_no_replicas() -> None:
    head = cluster()["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    assert "nvidia.com/gpu" not in ray_container(head["template"])["resources"]["limits"]


def test_autoscaling_is_on() -> None:
    spec = cluster()
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["autoscalerOptions"]["resources"]["limits"]
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert group["minReplicas"] < group["maxReplicas"], f"{group['groupName']} cannot scale"
        # autoscaler v2 (KubeRay's validation): restartPolicy Never or unset
        assert group["template"]["spec"].get("restartPolicy", "Never") == "Never"


def test_gcs_fault_tolerance_uses_the_redis_with_a_secret_password() -> None:
    spec = cluster()
    options = spec["gcsFaultToleranceOptions"]
    host, port = options["redisAddress"].removeprefix("redis://").rsplit(":", 1)
    assert (host, int(port)) == redis_service()
    password = options["redisPassword"]
    assert "value" not in password, "the password comes from a Secret, not the manifest"
    secret = password["valueFrom"]["secretKeyRef"]
    assert not secret.get("optional", False)
    # ... the very Secret Redis's --requirepass reads.
    redis_env = env_source(redis_container(), "REDIS_PASSWORD")
    assert redis_env["valueFrom"]["secretKeyRef"] == secret
    # KubeRay refuses these next to gcsFaultToleranceOptions (utils/validation.go).
    head = spec["headGroupSpec"]
    assert not {"redis-password", "redis-username"} & set(head["rayStartParams"])
    names = {e["name"] for e in ray_container(head["template"]).get("env", [])}
    assert not {"REDIS_PASSWORD", "REDIS_USERNAME", "RAY_REDIS_ADDRESS"} & names
    annotations = rayservice()["metadata"].get("annotations", {})
    assert not {"ray.io/ft-enabled", "ray.io/external-storage-namespace"} & set(annotations)


def test_redis_requires_the_password_and_fsyncs_every_write() -> None:
    container = redis_container()
    args = flags(container["args"])
    assert args["requirepass"] == "$(REDIS_PASSWORD)"  # Kubernetes expands it from the env below
    assert env_source(container, "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]["key"]
    assert args["appendonly"] == "yes" and args["appendfsync"] == "always"
    assert args["maxmemory-policy"] == "noeviction"  # never evict users' memories
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    assert quantity(args["maxmemory"].replace("gb", "Gi")) < quantity(resources["limits"]["memory"])
    # redis-cli exits 0 on NOAUTH: the probe must look for PONG, authenticated.
    assert "PONG" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert env_source(container, "REDISCLI_AUTH")["valueFrom"] == env_source(container, "REDIS_PASSWORD")["valueFrom"]


def ray_pods() -> list[tuple[str, dict[str, Any]]]:
    """The Ray container of every pod that may run memserve's code: the head and each worker group."""
    spec = cluster()
    return [("head", ray_container(spec["headGroupSpec"]["template"]))] + [
        (g["groupName"], ray_container(g["template"])) for g in spec["workerGroupSpecs"]
    ]


def test_every_ray_pod_gets_the_redis_password_from_the_secret() -> None:
    secret = env_source(redis_container(), "REDIS_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "memserve-redis", "key": "password"}
    # ... the Secret GCS fault tolerance reads too.
    assert cluster()["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"] == secret
    pods = ray_pods()
    assert {name for name, _ in pods} == {"head", "cpu", "gpu"}
    for name, container in pods:
        entry = env_source(container, PASSWORD_VAR)
        assert "value" not in entry, f"{name}: the password comes from the Secret"
        assert entry["valueFrom"] == {"secretKeyRef": secret}, name  # required: no `optional`


def test_the_manifest_and_the_serve_config_hold_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    text = MANIFEST.read_text()
    # The one placeholder is memserve's (Kubernetes' own `$(VAR)` is another syntax).
    assert set(re.findall(r"\$\{([^}]*)\}", text)) == {PASSWORD_VAR}
    assert "envsubst" not in text, "nothing renders the manifest: kubectl apply -f it as it is"
    for section in ("store", "cache"):
        url = urlsplit(app_config()["args"][section]["redis_url"])
        assert (url.hostname, url.port) == redis_service(), section
        assert url.password == "${" + PASSWORD_VAR + "}", section
        assert url.username in (None, ""), section
    # What Ray Serve's controller keeps and the dashboard shows is the config as validated:
    # it holds the placeholder, even where the variable is set.
    sentinel = "5e11f0a7c0ffee00d15ea5e"
    monkeypatch.setenv(PASSWORD_VAR, sentinel)
    served = ServeDeploySchema.model_validate(serve_config())
    assert sentinel not in served.model_dump_json(exclude_unset=True) and sentinel not in repr(served)
    settings = AppSettings.model_validate(app_config()["args"])
    assert sentinel not in settings.model_dump_json() and sentinel not in repr(settings)
    assert settings.store.redis_url == app_config()["args"]["store"]["redis_url"]


# ---------------------------------------------------------------- images and versions


def test_every_image_is_pinned() -> None:
    for where, container in all_containers():
        image = container["image"]
        assert "@sha256:" in image or re.search(r":[^/:]*\d+\.\d+\.\d+[^/:]*$", image), f"{where}: {image} floats"
        assert not image.endswith(":latest"), where
    if "image" in cluster().get("autoscalerOptions", {}):
        assert re.search(r":\S*\d+\.\d+\.\d+", cluster()["autoscalerOptions"]["image"])


def test_ray_versions_agree_with_the_pin() -> None:
    pin = ray_pin()
    assert cluster()["rayVersion"] == pin
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG RAY_IMAGE=rayproject/ray(?:-ml|-llm)?:(\S+)$", dockerfile, re.M)
    assert base.split("-")[0] == pin, f"k8s/Dockerfile builds on Ray {base}, pyproject pins {pin}"
    version = pyproject()["project"]["version"]
    for where, container in all_containers():
        if where.startswith(("head/", "cpu/", "gpu/")):
            assert container["image"].rsplit(":", 1)[1] == f"{version}-ray{pin}", where


def test_vllm_is_pinned_for_the_gpu_image() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    assert pinned(extras["gpu"], "vllm")


# ---------------------------------------------------------------- Redis, for real


@pytest.fixture
def manifest_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """redis-server started with the manifest's own arguments (Kubernetes' `$(VAR)` expanded,
    the volume's /data moved to a temporary directory), on a loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    password, port = "9f86d081884c7d65", free_port()
    env = {"REDIS_PASSWORD": password}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in redis_container()["args"]]
    args = [str(tmp_path) if a == "/data" else a for a in args]
    process = subprocess.Popen([binary, *args, "--port", str(port), "--bind", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password=password)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port, password
    finally:
        process.terminate()
        process.wait(timeout=10)


def local(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f":{parts.password}@127.0.0.1:{port}").geturl()


def local_args(port: int) -> dict[str, Any]:
    """The manifest's app args with the Redis URLs moved to the test server (placeholders kept)."""
    args = copy.deepcopy(app_config()["args"])
    for section in ("store", "cache"):
        args[section]["redis_url"] = local(args[section]["redis_url"], port)
        assert "${" + PASSWORD_VAR + "}" in args[section]["redis_url"]
    return args


def test_redis_as_deployed_refuses_strangers_and_serves_the_app(
    manifest_redis: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.cache import Cache
    from serve_app.core.env import EnvExpansionError
    from serve_app.core.redis_cache import RedisCache

    port, password = manifest_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    admin = redis.Redis(port=port, password=password)
    assert admin.config_get("appendfsync") == {"appendfsync": "always"}
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    settings = AppSettings.model_validate(local_args(port))  # validated without the variable
    # A pod with the Secret's password in its environment: memserve's own expansion connects.
    monkeypatch.setenv(PASSWORD_VAR, password)
    store = settings.open_store()
    assert store.store_id
    cache = Cache.func_or_class(settings.cache)._backend  # the Cache deployment's own opening
    assert isinstance(cache, RedisCache)

    async def cache_reaches_redis() -> None:
        try:
            assert await cache.r.ping()
            assert await cache.r.client_info()  # authenticated: AUTH went through
        finally:
            await cache.r.aclose()

    asyncio.run(cache_reaches_redis())
    # A wrong password is refused by Redis.
    monkeypatch.setenv(PASSWORD_VAR, "not-" + password)
    with pytest.raises(redis.AuthenticationError):
        settings.open_store()
    # Without the variable, replicas fail at start, naming it, showing no password.
    monkeypatch.delenv(PASSWORD_VAR)
    for opening in (settings.open_store, lambda: Cache.func_or_class(settings.cache)):
        with pytest.raises(EnvExpansionError, match=PASSWORD_VAR) as caught:
            opening()
        assert password not in str(caught.value) and "not set" in str(caught.value)


def test_kuberays_gcs_cleanup_leaves_memserves_keys(manifest_redis: tuple[int, str]) -> None:
    """When a RayCluster goes (each RayService upgrade), KubeRay's cleanup Job deletes its
    GCS storage namespace from this Redis (raycluster_controller.go: cleanup_redis_storage)."""
    from ray._private.gcs_utils import cleanup_redis_storage

    from serve_app.core.redis_store import RedisMemoryStore

    port, password = manifest_redis
    store = RedisMemoryStore(f"redis://:{password}@127.0.0.1:{port}/0")
    admin = redis.Redis(port=port, password=password)
    namespace = "6c1b5f2e-0d8e-4c1b-9a51-2f0c7d7e1a11"  # a RayCluster's UID
    admin.hset(f"RAY{namespace}@NODE", "n1", "x")  # GCS's key layout: RAY<namespace>@<table>
    before = {k for k in admin.scan_iter() if not k.startswith(b"RAY")}
    assert before
    assert cleanup_redis_storage(host="127.0.0.1", port=port, password=password, use_ssl=False,
                                 storage_namespace=namespace)
    assert not admin.exists(f"RAY{namespace}@NODE")
    assert {k for k in admin.scan_iter()} == before
    assert admin.get("memserve:store_id").decode() == store.store_id


# ---------------------------------------------------------------- Grafana dashboard

_PROTOCOLS = ("http", "grpc")  # ray.serve._private.common.RequestProtocol, lower-cased
_METRIC_CLASSES = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def _names(node: ast.expr | None) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts: list[list[str]] = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append([str(value.value)])
            elif isinstance(value, ast.FormattedValue) and ast.unparse(value.value) == "protocol_name":
                parts.append(list(_PROTOCOLS))
            else:
                return []  # a name built from something this check cannot know
        names = [""]
        for options in parts:
            names = [n + o for n in names for o in options]
        return names
    return []


def declared_metrics(*roots: Path) -> dict[str, str]:
    """Every metric a `Counter(...)`, `Gauge(...)` or `Histogram(...)` call declares under
    `roots`, by name -> kind (Ray's ray.util.metrics and Ray Serve's wrappers alike)."""
    found: dict[str, str] = {}
    for root in roots:
        for path in root.rglob("*.py"):
            if "tests" in path.parts:
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                cls = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if cls not in _METRIC_CLASSES:
                    continue
                arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
                for name in _names(arg):
                    found[name] = _METRIC_CLASSES[cls]
    return found


@pytest.fixture(scope="module")
def known_series() -> set[str]:
    """Prometheus series names Ray exports for them: `ray_` + name + the kind's suffix."""
    import ray.serve

    declared = declared_metrics(Path(ray.serve.__file__).parent, REPO / "serve_app", REPO / "deployments")
    assert declared.get("memserve_operation_ms") == "histogram"
    assert declared.get("serve_num_http_error_requests") == "counter"
    return {f"ray_{name}{suffix}" for name, kind in declared.items() for suffix in _SUFFIXES[kind]}


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    selectors = set(re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{", without_strings))
    return selectors | set(re.findall(r"\bray_[A-Za-z0-9_:]+", without_strings))


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert isinstance(board["schemaVersion"], int) and board["title"] and board["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    queries = "\n".join(dashboard_queries())
    for needed in ("histogram_quantile(0.5", "histogram_quantile(0.95", "cached", "generated",
                   "ray_serve_deployment_replica_healthy", "ray_serve_num_http_error_requests_total", "error_code"):
        assert needed in queries, needed


def test_every_dashboard_metric_exists(known_series: set[str]) -> None:
    board = json.loads(DASHBOARD.read_text())
    variable_queries = [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    used = set().union(*(metric_names(q) for q in [*dashboard_queries(), *variable_queries]))
    assert used, "no metric found in the dashboard's queries"
    assert sorted(used - known_series) == []


def test_the_metric_check_would_catch_a_wrong_name(known_series: set[str]) -> None:
    assert "ray_serve_num_http_error_requests_total" in known_series
    assert "ray_memserve_operation_ms_bucket" in known_series
    assert "ray_serve_num_htp_error_requests_total" not in known_series  # a typo
    assert "ray_serve_deployment_replica_healthy_total" not in known_series  # a gauge has no _total
    assert "ray_memserve_operation_ms" not in known_series  # a histogram is read as _bucket/_sum/_count


def test_the_dashboard_operations_are_memserves() -> None:
    """Every `operation` the queries match names one memserve records: a string of its code,
    as is (request.cached) or under the `stage.` prefix the pipeline gives stage timings."""
    code = "\n".join(p.read_text() for p in (REPO / "serve_app").rglob("*.py"))
    assert 'observe_all(p.info.timings_ms, prefix="stage.")' in code
    strings = {
        node.value
        for p in (REPO / "serve_app").rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    operations = strings | {f"stage.{s}" for s in strings}
    matchers = re.findall(r'operation(=~|=)"([^"]+)"', "\n".join(dashboard_queries()))
    assert {op for op, _ in matchers} == {"=", "=~"}
    for op, value in matchers:
        pattern = value if op == "=~" else re.escape(value)
        assert any(re.fullmatch(pattern, o) for o in operations), value
    assert "stage.ttft" in operations and "stage.total" in operations
