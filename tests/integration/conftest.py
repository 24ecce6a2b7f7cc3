"""One real memserve application per test session, started exactly as a user starts it:
`serve run <config>` with the real vLLM CPU engine, MiniLM and FAISS.

The config is configs/local.yaml with a private data directory and port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from serve_app import serve_env

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = float(os.environ.get("MEMSERVE_TEST_STARTUP_S", "600"))
LOGS: dict[str, Path] = {}  # base URL -> its serve run log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, port: int, redis_url: str | None) -> Path:
    """configs/local.yaml with a private port and data directory, two replicas per shard
    (so replicas must agree through the change log) and, optionally, the Redis store."""
    config = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"]["data_dir"] = str(tmp / "data")
    if redis_url:
        app["args"]["store"] = {"backend": "redis", "redis_url": redis_url, "redis_prefix": "e2e"}
        app["args"]["cache"] = {"backend": "redis", "redis_url": redis_url}
    for deployment in app["deployments"]:
        if deployment["name"].startswith("VectorSearch_"):
            deployment["autoscaling_config"].update(min_replicas=2, max_replicas=2)
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve run exited with {process.returncode}:\n{log.read_text()[-5000:]}")
        unschedulable = [line for line in log.read_text(errors="replace").splitlines() if "to be scheduled" in line]
        if unschedulable:
            raise RuntimeError(f"a replica cannot be scheduled (resources in the config?):\n{unschedulable[0]}")
        try:
            # Every deployment answers: the Consolidator (memory API) and the LLM (one token).
            if httpx.get(f"{base_url}/v1/memories/consolidation", timeout=5).status_code == 200:
                chat = {"model": "smollm2-135m-instruct", "max_tokens": 1,
                        "messages": [{"role": "user", "content": "hi"}], "memserve": {"cache": False}}
                if httpx.post(f"{base_url}/v1/chat/completions", json=chat, timeout=60).status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"memserve did not come up in {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-5000:]}")


@pytest.fixture(scope="session", params=["sqlite", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The live app, once on the embedded SQLite store and once on a real Redis."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    tmp = tmp_path_factory.mktemp(f"memserve-{request.param}")
    port = free_port()
    config = write_config(tmp, port, redis_url)
    log = tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "MEMSERVE_API_KEYS"}  # an open app
    env.update(HF_HUB_OFFLINE="1", RAY_DEDUP_LOGS="0", **serve_env.private())  # as `make run` starts
    serve_bin = Path(sys.executable).with_name("serve")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(serve_bin), "run", str(config)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
            # A background job of a non-interactive shell (CI) inherits SIGINT as ignored;
            # serve run shuts down cleanly only on SIGINT, so restore its default handler.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, process, log)
        LOGS[base_url] = log
        yield base_url
    finally:
        # serve run shuts down the app and the Ray instance it started (no `ray stop`:
        # that would also stop any other Ray on this machine, such as a running `make run`).
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def dashboard(server: str) -> str:
    """The Ray dashboard of the live app (Serve's own status is read from its REST API),
    as `serve run` logged it when it started its Ray instance."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", LOGS[server].read_text(errors="replace"))
    found = re.search(r"View the dashboard at (\S+)", text)
    assert found, "serve run did not log a dashboard address"
    url = found.group(1)
    return url if url.startswith("http") else f"http://{url}"


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client
