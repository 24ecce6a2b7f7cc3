from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.app import create_app
from serve_app.chat.pipeline import ChatPipeline
from serve_app.memory_service import MemoryService
from serve_app.runtime import Runtime, build_runtime
from serve_app.settings import AppSettings
from tests.fakes import FakeGraph


@pytest.fixture
def settings(tmp_path: Path) -> AppSettings:
    s = AppSettings(data_dir=str(tmp_path))
    s.server.max_body_bytes = 10_000
    s.memory.min_similarity = 0.1
    return s


@pytest.fixture
def graph(tmp_path: Path) -> FakeGraph:
    return FakeGraph(tmp_path / "store.sqlite3")


@pytest.fixture
def runtime(settings: AppSettings, graph: FakeGraph) -> Runtime:
    """The request logic over the in-process graph, without the near cache."""
    return build_runtime(settings, graph.clients(), graph.store)


@pytest.fixture
def memory(runtime: Runtime) -> MemoryService:
    return runtime.memory


@pytest.fixture
def pipeline(runtime: Runtime) -> ChatPipeline:
    return runtime.pipeline


def app_over(settings: AppSettings, graph: FakeGraph) -> TestClient:
    """An Orchestrator replica's app as Ray Serve would build it (near cache included)."""
    return TestClient(create_app(build_runtime(settings, graph.clients(settings.cache), graph.store)))


@pytest.fixture
def client(settings: AppSettings, graph: FakeGraph) -> Iterator[TestClient]:
    # As a context manager the client keeps one event loop, so background work (ingestion
    # jobs, write-back) runs between requests as it does in a replica.
    with app_over(settings, graph) as client:
        yield client
