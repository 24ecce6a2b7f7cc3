"""Scaling observed on the live app: a stage autoscales up under a bounded locust load and
back down after it, read from Serve's own status; past capacity the app sheds with fast
OpenAI-style 503s carrying Retry-After, loses no acknowledged write, and recovers."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_app.serve_status import dashboard_headers, fetch_replicas

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def running_replicas(dashboard: str) -> dict[str, int]:
    """RUNNING replicas per deployment of the memserve app, from Ray Serve's REST API."""
    headers, _ = dashboard_headers()
    with httpx.Client(timeout=10, headers=headers) as client:
        return fetch_replicas(client, dashboard).running


class ReplicaSampler:
    """Samples `running_replicas` every second in a thread until stopped."""

    def __init__(self, dashboard: str) -> None:
        self.dashboard = dashboard
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReplicaSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(httpx.HTTPError):
                self.samples.append((time.monotonic(), running_replicas(self.dashboard)))

    def peak(self, deployment: str) -> int:
        return max((s.get(deployment, 0) for _, s in self.samples), default=0)


def wait_for_replicas(dashboard: str, deployment: str, count: int, timeout_s: float) -> list[int]:
    """Poll Serve's status until `deployment` runs `count` replicas; the counts seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen.append(running_replicas(dashboard).get(deployment, 0))
        if seen[-1] == count:
            return seen
        time.sleep(1)
    return seen


@pytest.fixture
def settled(dashboard: str) -> Iterator[str]:
    """Start and end at the Orchestrator's minimum, so each test sees its own scaling."""
    assert wait_for_replicas(dashboard, "Orchestrator", 1, 120)[-1] == 1
    yield dashboard
    wait_for_replicas(dashboard, "Orchestrator", 1, 120)


def test_orchestrator_scales_up_under_load_and_back_down(server: str, settled: str, tmp_path: Path) -> None:
    with ReplicaSampler(settled) as sampler:
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", "benchmarks/locustfile.py", "--host", server, "--headless",
             "-u", "24", "-r", "12", "-t", "30s", "--csv", str(tmp_path / "load"), "--only-summary"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        assert run.returncode in (0, 1), run.stderr[-3000:]  # 1: some requests failed (shed), reported below
        peak = sampler.peak("Orchestrator")
    assert peak >= 2, f"the Orchestrator never scaled up: {sampler.samples[-5:]}"
    after = wait_for_replicas(settled, "Orchestrator", 1, 120)
    assert after[-1] == 1, f"the Orchestrator did not scale back down: {after}"


async def _chat(client: httpx.AsyncClient, i: int) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 48, "stream": True, "memserve": {"cache": False, "memory": False},
            "messages": [{"role": "user", "content": f"Write a short poem about the number {i}."}]}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        await response.aread()
        return response


async def _overload(server: str, n: int) -> tuple[list[httpx.Response], list[int], list[str]]:
    """`n` concurrent streamed chats, memory writes beside them, and /health probes."""
    limits = httpx.Limits(max_connections=n + 16)
    async with httpx.AsyncClient(base_url=server, timeout=300, limits=limits) as client:
        chats = [asyncio.create_task(_chat(client, i)) for i in range(n)]
        writes = [client.post("/v1/memories", json={"user": "shed-user", "text": f"overload fact number {i}: {w}"})
                  for i, w in enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"])]
        write_responses = await asyncio.gather(*writes)
        health = [(await client.get("/health")).status_code for _ in range(5)]
        responses = await asyncio.gather(*chats)
    acked = [r.json()["ids"][0] for r in write_responses if r.status_code == 200]
    return responses, health, acked


def test_past_capacity_requests_are_shed_with_retry_after_and_nothing_is_lost(server: str, http: httpx.Client) -> None:
    responses, health, acked = asyncio.run(_overload(server, 80))
    shed = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code == 200]
    assert len(shed) + len(served) == len(responses), sorted({r.status_code for r in responses})
    assert shed, "80 concurrent generations fit: nothing was shed"
    errors = [r.json()["error"] for r in shed]
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
    assert all(e["type"] == "service_unavailable" for e in errors), errors
    # Past the LLM's admission limits a chat is refused at once (`overloaded`). One that was
    # admitted to its queue but got no first token within generation_start_timeout_s is
    # refused then (`unavailable`, as while the engine is replaced): that happened once in
    # CI, on a slower hour of the shared machine. Nothing else may answer a shed request.
    assert any(e["code"] == "overloaded" for e in errors), errors
    late = [e for e in errors if e["code"] != "overloaded"]
    assert all(e["code"] == "unavailable" and "did not start answering" in e["message"] for e in late), late
    assert all(b"data: [DONE]" in r.content for r in served)
    assert health == [200] * 5
    # Every acknowledged write is there.
    listed = {m["id"] for m in http.get("/v1/memories", params={"user": "shed-user", "limit": 100}).json()["data"]}
    assert set(acked) <= listed and acked
    # And the app serves normally again.
    again = http.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4, "memserve": {"cache": False},
                                                     "messages": [{"role": "user", "content": "hi"}]})
    assert again.status_code == 200
