"""The job board on both stores: shared state, throttled progress, stale and old jobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from serve_app.core.redis_store import RedisMemoryStore
from serve_app.core.sqlite_store import SQLiteMemoryStore
from serve_app.core.store import MemoryStore
from serve_app.jobs import SPACE, Job, JobBoard


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryStore:
    if request.param == "sqlite":
        return SQLiteMemoryStore(tmp_path / "m.sqlite3")
    return RedisMemoryStore(request.getfixturevalue("redis_server").url, f"j{uuid.uuid4().hex[:8]}")


def board(store: MemoryStore, **options: float) -> JobBoard:
    return JobBoard(store, **options)


def new_job() -> Job:
    return Job(f"job-{uuid.uuid4().hex}", "doc-1", "a.txt", "shared")


def test_another_replica_sees_status_changes_and_throttled_progress(store: MemoryStore) -> None:
    async def run() -> None:
        runner, other = board(store, progress_interval_s=3600), board(store)
        job = await runner.create(new_job())
        assert (await other.get(job.id)).status == "queued"  # type: ignore[union-attr]
        job.status, job.chunks_total = "running", 10
        await runner.save(job)
        job.chunks_done = 5
        await runner.save(job)  # progress inside the interval: not written
        seen = await other.get(job.id)
        assert seen is not None and seen.status == "running" and (seen.chunks_done, seen.chunks_total) == (0, 10)
        assert (await runner.get(job.id)).chunks_done == 5  # type: ignore[union-attr]
        job.status, job.chunks_done = "done", 10
        await runner.save(job)  # a status change is always written
        assert await other.get(job.id) == job

    asyncio.run(run())


def test_unknown_and_malformed_ids(store: MemoryStore) -> None:
    async def run() -> None:
        assert await board(store).get("job-missing") is None
        assert await board(store).get("../etc") is None

    asyncio.run(run())


def test_a_running_job_nobody_updates_is_reported_failed(store: MemoryStore) -> None:
    async def run() -> None:
        job = await board(store).create(new_job())
        late = await board(store, stale_after_s=0.0).get(job.id)
        assert late is not None and late.status == "failed" and "stopped" in (late.error or "")

    asyncio.run(run())


def test_prune_forgets_old_jobs_and_keeps_live_ones(store: MemoryStore) -> None:
    async def run() -> None:
        runner = board(store, keep_s=0.0)
        finished = await runner.create(Job(f"job-{uuid.uuid4().hex}", "doc-2", "b.txt", "shared", "done"))
        live = await runner.create(new_job())
        time.sleep(0.01)
        assert await runner.prune() == 1
        assert await runner.get(finished.id) is None and await runner.get(live.id) is live
        assert list(store.kv_items(SPACE)) == [live.id]
        assert store.users() == [] and store.last_seq() == 0  # jobs stay out of the memories and their log

    asyncio.run(run())
