from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the session. Skipped only where the binary does not
    exist; `.ci/run` installs it, so CI always runs the Redis half."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_api_keys_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build open apps unless they configure keys themselves."""
    monkeypatch.delenv("MEMSERVE_API_KEYS", raising=False)
    monkeypatch.delenv("MEMSERVE_TENANT_KEYS", raising=False)
