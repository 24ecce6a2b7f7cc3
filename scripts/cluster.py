"""A real multi-node Ray cluster on this machine, serving configs/cluster.yaml.

    .venv/bin/python scripts/cluster.py up        # `make cluster`: prints the URL when it answers
    .venv/bin/python scripts/cluster.py status    # nodes, and which replicas run on which
    .venv/bin/python scripts/cluster.py down      # `make cluster-down`

`up` starts, each as its own process tree:

* a Ray head node: `ray start --head --block --num-cpus 1 --resources '{"memserve_head": 1}'`
  (GCS, dashboard, raylet; the LLM and the Orchestrator are pinned to it);
* a second Ray node joined to it: `ray start --address HEAD --block --num-cpus 1
  --resources '{"memserve_worker": 1}'` (its own raylet, object store and workers);
* a `redis-server` with `appendonly yes` and `appendfsync always` (unless `--redis-url`
  names one that runs already);

then `serve deploy`s configs/cluster.yaml (with this cluster's HTTP port and data directory)
through the head's dashboard and waits until every deployment runs its replicas and a chat
is answered. Every port is a free one picked at start (the HTTP port is 8000 when that is
free, or `--http-port`); nothing uses Ray's or Redis's default ports, so the cluster runs
beside `make run` or a test run. Each node has its own `--temp-dir` under the cluster
directory (`MEMSERVE_CLUSTER_DIR`, default /tmp/memserve-cluster), where `state.json`,
the logs and Redis's files live.

`down` stops only this cluster's processes: `serve shutdown`, then each process tree it
started (found again by pid and start time), then any process still naming the cluster's
temp directories. Never `ray stop`, which would stop every Ray instance on the machine.

Ray 2.60 turns token authentication on for a cluster when a token exists: every process
here runs with `RAY_AUTH_MODE=token` and the token of `~/.ray/auth_token` (made with
`ray get-auth-token --generate` when missing), which `serve_app.serve_status` sends too.

The tests in tests/cluster/ drive the same class (`LocalCluster`) and kill its nodes.

Not applied here: configs/serve.env (HAProxy ingress, what `make run` uses). In that mode
each Orchestrator replica binds a port of 30000-31000 on all interfaces, and the two nodes
of this cluster share one machine's ports; the cluster keeps Ray Serve's own proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python scripts/cluster.py` from anywhere

from serve_app.serve_status import applications_url, dashboard_headers  # noqa: E402

BIN = Path(sys.executable).parent
DEFAULT_DIR = Path(os.environ.get("MEMSERVE_CLUSTER_DIR", "/tmp/memserve-cluster"))
DEFAULT_CONFIG = REPO / "configs" / "cluster.yaml"
# Each node has its own loopback address, so nothing Ray sends leaves this machine (Ray
# replaces 127.0.0.1 itself with the machine's address, not 127.0.0.x).
HEAD_IP = "127.0.0.2"
WORKER_IPS = ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
HEAD_RESOURCES = {"memserve_head": 1}
WORKER_RESOURCES = {"memserve_worker": 1}
MODEL = "smollm2-135m-instruct"
APP = "memserve"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", flush=True)


# A Ray driver that runs one task on a given node (`_wait_schedulable`).
_PROBE = """
import logging, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
address, node_ip, node_id, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ray.init(address=address, _node_ip_address=node_ip, logging_level=logging.ERROR, log_to_driver=False)
where = ray.remote(num_cpus=0)(lambda: ray.get_runtime_context().get_node_id())
print(ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(),
              timeout=timeout))
"""


# ---------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A process this cluster started, found again by pid and start time (a pid alone may
    have been reused since)."""

    name: str
    pid: int
    created: float
    log: str

    def process(self) -> psutil.Process | None:
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.created) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                return p
        except psutil.Error:
            pass
        return None

    def alive(self) -> bool:
        return self.process() is not None

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants, as they are now."""
        p = self.process()
        if p is None:
            return []
        with contextlib.suppress(psutil.Error):
            return [p, *p.children(recursive=True)]
        return [p]


def spawn(name: str, args: list[str], log_path: Path, env: dict[str, str]) -> Proc:
    """Start `args` in its own session (so a terminal's Ctrl-C does not reach it), output to `log_path`."""
    with log_path.open("ab") as out:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(name, process.pid, psutil.Process(process.pid).create_time(), str(log_path))


def kill_all(processes: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM (or SIGKILL when `grace_s` is 0) every process at once; SIGKILL what is left after `grace_s`."""
    sig = signal.SIGTERM if grace_s > 0 else signal.SIGKILL
    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)
    _, alive = psutil.wait_procs(processes, timeout=max(grace_s, 0.1))
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def processes_naming(text: str) -> list[psutil.Process]:
    """Processes whose command line contains `text` (this cluster's temp directory)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and any(text in part for part in p.info["cmdline"] or []):
                found.append(p)
    return found


# ---------------------------------------------------------------------------- the cluster


@dataclass
class State:
    """What `up` started, for `status` and `down` in later processes."""

    root: str
    gcs_port: int
    dashboard_port: int
    http_port: int
    redis_url: str = ""
    redis: Proc | None = None
    head: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)  # every node's changes to the environment

    def save(self) -> None:
        Path(self.root, "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, root: Path) -> State | None:
        path = root / "state.json"
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        procs = {k: Proc(**raw[k]) if raw.get(k) else None for k in ("redis", "head")}
        workers = [Proc(**w) for w in raw.get("workers", [])]
        return cls(**{**raw, **procs, "workers": workers})


class LocalCluster:
    """A Ray head, Ray worker nodes and (optionally) a redis-server on this machine, and the
    memserve app deployed on them from a Serve config.

    `redis_url`: use this Redis (its owner starts and stops it); None starts a private one
    with append-only fsync-always persistence under the cluster directory.
    `env`: extra environment for every node (the replicas inherit it); None removes a variable.
    """

    def __init__(self, root: Path = DEFAULT_DIR, config: Path = DEFAULT_CONFIG, http_port: int | None = None,
                 redis_url: str | None = None, env: dict[str, str | None] | None = None,
                 edit_config: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.root = root.resolve()
        self.config = config
        self.edit_config = edit_config
        self._own_redis = redis_url is None
        if http_port is None:
            http_port = 8000 if port_is_free(8000) else free_port()
        self.state = State(root=str(self.root), gcs_port=free_port(), dashboard_port=free_port(),
                           http_port=http_port, redis_url=(redis_url or "").rstrip("/"), env=dict(env or {}))

    # -- addresses
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state.http_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.state.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"{HEAD_IP}:{self.state.gcs_port}"

    def _node_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", RAY_AUTH_MODE="token", RAY_DEDUP_LOGS="0",
                   RAY_USAGE_STATS_ENABLED="0", MEMSERVE_REDIS_URL=self.state.redis_url)
        for name, value in self.state.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def _temp_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- lifecycle
    def up(self, timeout_s: float = 900) -> None:
        """Everything, in order; on failure whatever started is stopped again."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._ensure_token()
            if self._own_redis:
                self.start_redis()
            self.start_head()
            self.add_worker()
            self.deploy()
            self.wait_until_ready(timeout_s)
        except BaseException:
            self.down()
            raise

    def _ensure_token(self) -> None:
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], check=True, capture_output=True,
                       env=self._node_env())

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        data = self._temp_dir("redis")
        port = free_port()
        self.state.redis_url = f"redis://127.0.0.1:{port}"
        self.state.redis = spawn("redis", [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--protected-mode", "no", "--daemonize", "no",
        ], self.root / "redis.log", self._node_env())
        self.state.save()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    log(f"redis-server on {self.state.redis_url} (AOF, appendfsync always)")
                    return
            time.sleep(0.1)
        raise TimeoutError(f"redis-server did not start: {self.root / 'redis.log'}")

    def start_head(self) -> None:
        temp = self._temp_dir("head")
        args = [
            str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", HEAD_IP,
            "--port", str(self.state.gcs_port), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.state.dashboard_port), "--include-dashboard", "true",
            "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
            "--metrics-export-port", str(free_port()), "--num-cpus", "1", "--num-gpus", "0",
            "--resources", json.dumps(HEAD_RESOURCES), "--temp-dir", str(temp), "--disable-usage-stats",
        ]
        self.state.head = spawn("head", args, self.root / "head.log", self._node_env())
        self.state.save()
        self._wait_for(lambda: self._dashboard_get("/api/version") is not None, 120, "the Ray head", self.state.head)
        log(f"Ray head at {self.gcs_address}, dashboard {self.dashboard}")

    def add_worker(self) -> Proc:
        """Another Ray node joined to the head; returns once the head counts it alive."""
        n = len(self.state.workers) + 1
        temp = self._temp_dir(f"worker{n}")
        args = [
            str(BIN / "ray"), "start", "--address", self.gcs_address, "--block",
            "--node-ip-address", WORKER_IPS[(n - 1) % len(WORKER_IPS)],
            "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
            "--num-cpus", "1", "--num-gpus", "0", "--resources", json.dumps(WORKER_RESOURCES),
            "--temp-dir", str(temp), "--disable-usage-stats",
        ]
        before = {n["node_id"] for n in self.nodes() if n["state"] == "ALIVE"}
        worker = spawn(f"worker{n}", args, self.root / f"worker{n}.log", self._node_env())
        self.state.workers.append(worker)
        self.state.save()
        joined: list[str] = []

        def alive() -> bool:
            joined.extend(n["node_id"] for n in self.nodes() if n["node_id"] not in before and n["state"] == "ALIVE")
            return bool(joined)

        self._wait_for(alive, 120, f"Ray node worker{n}", worker)
        self._wait_schedulable(joined[0])
        log(f"Ray node worker{n} joined")
        return worker

    def _wait_schedulable(self, node_id: str, timeout_s: float = 120) -> None:
        """Until the head's scheduler places work on the node. A node is ALIVE in the GCS a
        few seconds before the head's raylet counts its resources; replicas scheduled in
        between would all land on the head (Serve spreads them over the nodes it sees)."""
        run = subprocess.run([sys.executable, "-c", _PROBE, self.gcs_address, HEAD_IP, node_id, str(timeout_s)],
                             env=self._node_env(), capture_output=True, text=True, timeout=timeout_s + 60)
        if run.returncode != 0 or node_id not in run.stdout:
            raise RuntimeError(f"no work could be scheduled on node {node_id}:\n{run.stdout[-2000:]}"
                               f"{run.stderr[-2000:]}")

    def kill_worker(self, worker: Proc) -> float:
        """Crash a node: SIGKILL its raylet, agents and every worker process on it at once.
        Returns the monotonic time of the kill."""
        tree = worker.tree()
        assert tree, f"{worker.name} is not running"
        kill_all(tree, grace_s=0)
        return time.monotonic()

    def serve_config(self) -> dict[str, Any]:
        """configs/cluster.yaml with this cluster's HTTP port and data directory."""
        config: dict[str, Any] = yaml.safe_load(self.config.read_text())
        config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1",
                                  "port": self.state.http_port}
        config["applications"][0]["args"]["data_dir"] = str(self.root / "data")
        if self.edit_config is not None:
            self.edit_config(config)
        return config

    def deploy(self) -> None:
        path = self.root / "serve.yaml"
        path.write_text(yaml.safe_dump(self.serve_config(), sort_keys=False))
        run = subprocess.run([str(BIN / "serve"), "deploy", str(path), "--address", self.dashboard],
                             cwd=REPO, env=self._node_env(), capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"serve deploy failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        log(f"serve deploy {self.config.name} sent")

    def wait_until_ready(self, timeout_s: float = 900) -> float:
        """Until every deployment runs its target replicas, the memory API answers and a chat
        is generated. Returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.state.head is not None and not self.state.head.alive():
                raise RuntimeError(f"the Ray head exited: {self.state.head.log}")
            details = self.serve_details()
            app = (details or {}).get("applications", {}).get(APP, {})
            status = app.get("status")
            if status == "DEPLOY_FAILED":
                raise RuntimeError(f"deploying failed: {app.get('message')}")
            if status != last and status:
                log(f"application {status}")
                last = status
            if status == "RUNNING" and self._answers():
                took = time.monotonic() - started
                log(f"ready after {took:.0f} s at {self.url}")
                return took
            time.sleep(2)
        raise TimeoutError(f"memserve did not become ready in {timeout_s} s; logs in {self.root}")

    def _answers(self) -> bool:
        try:
            if httpx.get(f"{self.url}/v1/memories/consolidation", timeout=10).status_code != 200:
                return False
            chat = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}],
                    "memserve": {"cache": False}}
            return httpx.post(f"{self.url}/v1/chat/completions", json=chat, timeout=120).status_code == 200
        except httpx.HTTPError:
            return False

    def down(self) -> None:
        """Stop what this cluster started (only that), and forget it."""
        state = self.state
        head_up = state.head is not None and state.head.alive()
        if head_up:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run([str(BIN / "serve"), "shutdown", "--address", self.dashboard, "--yes"],
                               env=self._node_env(), capture_output=True, timeout=60)
        nodes = [p for p in [*state.workers, state.head] if p is not None]
        tree = [q for p in nodes for q in p.tree()]
        kill_all(tree, grace_s=10)
        # Workers whose raylet died first re-parent elsewhere; they still name their temp dir.
        leftovers = [p for name in ["head", *(w.name for w in state.workers)]
                     for p in processes_naming(str(self.root / name))]
        kill_all(leftovers, grace_s=5)
        if state.redis is not None:
            kill_all(state.redis.tree(), grace_s=10)
        state.head, state.workers, state.redis = None, [], None
        if self.root.exists():
            state.save()
        log("stopped")

    # -- reading the cluster
    def _dashboard_get(self, path: str, timeout: float = 10) -> Any:
        headers, _ = dashboard_headers()
        try:
            response = httpx.get(self.dashboard + path, headers=headers, timeout=timeout)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError):
            return None

    def nodes(self) -> list[dict[str, Any]]:
        """Ray's nodes (state API): node_id, state ALIVE/DEAD, is_head_node, resources_total."""
        found = self._dashboard_get("/api/v0/nodes?limit=100&detail=true")
        if not found:
            return []
        result: list[dict[str, Any]] = found["data"]["result"]["result"]
        return result

    def serve_details(self) -> dict[str, Any] | None:
        """Serve's status: applications, deployments and each replica with its node_id."""
        headers, _ = dashboard_headers()
        try:
            response = httpx.get(applications_url(self.dashboard), headers=headers, timeout=10)
            response.raise_for_status()
            details: dict[str, Any] = response.json()
            return details
        except (httpx.HTTPError, ValueError):
            return None

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica of the app: deployment, replica_id, actor_name, node_id, state."""
        details = self.serve_details() or {}
        deployments = details.get("applications", {}).get(APP, {}).get("deployments", {})
        return [{**replica, "deployment": name}
                for name, d in deployments.items() for replica in d.get("replicas") or []]

    def node_roles(self) -> dict[str, str]:
        """node_id -> `head` or `worker` (by the custom resource it advertises), live nodes only."""
        roles = {}
        for node in self.nodes():
            if node.get("state") != "ALIVE":
                continue
            resources = node.get("resources_total") or {}
            roles[node["node_id"]] = "head" if "memserve_head" in resources else "worker"
        return roles

    def _wait_for(self, ready: Callable[[], bool], timeout_s: float, what: str, proc: Proc) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            if not proc.alive():
                raise RuntimeError(f"{what} exited:\n{Path(proc.log).read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"{what} did not come up in {timeout_s} s: {proc.log}")

    @classmethod
    def attach(cls, root: Path = DEFAULT_DIR) -> LocalCluster | None:
        """The cluster `up` left in `root` (for `status` and `down`), or None."""
        state = State.load(root.resolve())
        if state is None:
            return None
        cluster = cls.__new__(cls)
        cluster.root, cluster.config, cluster.edit_config = root.resolve(), DEFAULT_CONFIG, None
        cluster._own_redis = state.redis is not None
        cluster.state = state
        return cluster


@contextlib.contextmanager
def running(cluster: LocalCluster, timeout_s: float = 900) -> Iterator[LocalCluster]:
    cluster.up(timeout_s)
    try:
        yield cluster
    finally:
        cluster.down()


# ---------------------------------------------------------------------------- CLI


def print_status(cluster: LocalCluster) -> int:
    state = cluster.state
    if state.head is None or not state.head.alive():
        print(f"no cluster running from {cluster.root}")
        return 1
    print(f"memserve      {cluster.url}")
    print(f"dashboard     {cluster.dashboard}   (token: ~/.ray/auth_token)")
    print(f"ray address   {cluster.gcs_address}")
    print(f"redis         {state.redis_url}")
    roles = cluster.node_roles()
    for node in cluster.nodes():
        print(f"node {node['node_id'][:12]}  {roles.get(node['node_id'], '-'):6} {node['state']}")
    for replica in sorted(cluster.replicas(), key=lambda r: (r["deployment"], r.get("node_id") or "")):
        node = replica.get("node_id") or ""
        print(f"  {replica['deployment']:16} {replica['state']:10} on {roles.get(node, '?'):6} {node[:12]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster state, logs, Redis data")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--http-port", type=int, default=None, help="default: 8000 if free, else any free port")
    parser.add_argument("--redis-url", default=None, help="an existing Redis (redis://host:port); default: start one")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the app")
    args = parser.parse_args(argv)
    attached = LocalCluster.attach(args.dir)
    if args.command == "status":
        return print_status(attached) if attached else (print(f"no cluster in {args.dir}") or 1)
    if args.command == "down":
        if attached is None:
            print(f"no cluster in {args.dir}")
            return 0
        attached.down()
        return 0
    if attached is not None and attached.state.head is not None and attached.state.head.alive():
        print(f"a cluster is running from {args.dir} already:")
        print_status(attached)
        return 1
    if attached is not None:
        attached.down()  # whatever a crashed cluster left running (its Redis, a lone node)
    # A stopped cluster's directory is reused: its Redis data (the memories) survive a down/up.
    cluster = LocalCluster(args.dir, args.config, args.http_port, args.redis_url)
    cluster.up(args.timeout)
    print_status(cluster)
    print(f"\nmemserve is serving at {cluster.url}   (stop it: make cluster-down)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
