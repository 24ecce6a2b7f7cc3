"""Ingestion jobs that every Orchestrator replica can report.

An upload is accepted by one replica, which runs its job; the client may ask any replica
for the job's progress. So a job's state lives in the store's key-value space `jobs`
(key: the job id, value: the job as JSON plus `updated_at`), not among the memories, so
its writes stay out of the change logs every VectorSearch replica replays. The running
replica writes it through on every status change and, for progress, at most every
`progress_interval_s`. A job still "running" whose record has not been written for
`stale_after_s` belonged to a replica that stopped; it is reported as failed. Finished
jobs are forgotten after `keep_s`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from serve_app.core.store import MemoryStore

SPACE = "jobs"

JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass
class Job:
    id: str
    document_id: str
    filename: str
    scope: str
    status: JobStatus = "queued"
    chunks_done: int = 0
    chunks_total: int = 0
    error: str | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


JOB_FIELDS = frozenset(f.name for f in fields(Job))


@dataclass
class _Live:
    job: Job
    saved_status: JobStatus
    saved_at: float


def encode_job(job: Job, now: float) -> str:
    """The stored form: the job's fields plus `updated_at`, which the staleness rule reads."""
    return json.dumps({**asdict(job), "updated_at": now})


def _parse(value: str) -> dict[str, Any] | None:
    """The stored record as a dict, or None if it is not one (never trust stored text)."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def decode_job(value: str) -> tuple[Job, float] | None:
    """The job and its `updated_at`; fields of other versions are ignored, and a record
    this version cannot read is None."""
    data = _parse(value)
    if data is None:
        return None
    try:
        job = Job(**{k: v for k, v in data.items() if k in JOB_FIELDS})
    except TypeError:  # a required field is missing
        return None
    return job, float(data.get("updated_at", job.created_at))


def _updated_at(value: str) -> float:
    """When the record was last written; 0 for an unreadable one, so pruning removes it."""
    data = _parse(value)
    try:
        return float(data["updated_at"]) if data else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


class JobBoard:
    def __init__(
        self, store: MemoryStore, progress_interval_s: float = 2.0, stale_after_s: float = 300.0,
        keep_s: float = 24 * 3600.0,
    ) -> None:
        self.store = store
        self.progress_interval_s = progress_interval_s
        self.stale_after_s = stale_after_s
        self.keep_s = keep_s
        self._live: dict[str, _Live] = {}  # jobs this replica runs

    async def _write(self, job: Job) -> None:
        await asyncio.to_thread(self.store.kv_put, SPACE, job.id, encode_job(job, time.time()))

    async def create(self, job: Job) -> Job:
        """Record a new job; it is visible to every replica once this returns."""
        await self._write(job)
        if not job.finished:
            self._live[job.id] = _Live(job, job.status, time.monotonic())
        return job

    async def save(self, job: Job) -> None:
        """Write the job through: always on a status change, otherwise (progress) at most
        every `progress_interval_s`."""
        live = self._live.get(job.id)
        if live is None:
            return
        if job.status == live.saved_status and time.monotonic() - live.saved_at < self.progress_interval_s:
            return
        await self._write(job)
        live.saved_status, live.saved_at = job.status, time.monotonic()
        if job.finished:
            del self._live[job.id]

    async def get(self, job_id: str) -> Job | None:
        """The live object if this replica runs the job, else the stored state."""
        if job_id in self._live:
            return self._live[job_id].job
        if not job_id.startswith("job-"):
            return None
        value = await asyncio.to_thread(self.store.kv_get, SPACE, job_id)
        found = None if value is None else decode_job(value)
        if found is None:
            return None
        job, updated_at = found
        if not job.finished and time.time() - updated_at > self.stale_after_s:
            job.status, job.error = "failed", "the replica running this job stopped; upload the file again"
        return job

    async def prune(self) -> int:
        """Forget jobs not written for `keep_s` (finished ones, and stale ones), except
        those this replica runs; returns how many."""
        cutoff = time.time() - self.keep_s
        items = await asyncio.to_thread(self.store.kv_items, SPACE)
        doomed = [job_id for job_id, value in items.items()
                  if job_id not in self._live and _updated_at(value) < cutoff]
        if doomed:
            await asyncio.to_thread(self.store.kv_delete, SPACE, doomed)
        return len(doomed)
