from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.api import build_runtime, create_app
from serve_app.memory_service import MemoryService
from serve_app.settings import AppSettings
from tests.fakes import FakeServices


@pytest.fixture
def settings(tmp_path: Path) -> AppSettings:
    s = AppSettings(data_dir=str(tmp_path))
    s.server.max_body_bytes = 10_000
    s.memory.min_similarity = 0.1
    return s


@pytest.fixture
def services(tmp_path: Path) -> FakeServices:
    return FakeServices(tmp_path / "store.sqlite3")


@pytest.fixture
def memory(settings: AppSettings, services: FakeServices) -> MemoryService:
    return MemoryService(services.store, services, len(services.shards), settings.memory)


@pytest.fixture
def client(settings: AppSettings, services: FakeServices) -> Iterator[TestClient]:
    # As a context manager the client keeps one event loop, so background work (ingestion
    # jobs, write-back) runs between requests as it does in a replica.
    with TestClient(create_app(build_runtime(settings, services, services.store, len(services.shards)))) as client:
        yield client
