"""Ingestion jobs that every Orchestrator replica can report.

An upload is accepted by one replica, which runs its job; the client may ask any replica
for the job's progress. So a job's state lives in the store, one record in a system
namespace per job (`__job__:<id>`): the running replica writes it through on every
status change and, for progress, at most every `progress_interval_s`. A job still
"running" whose record has not been written for `stale_after_s` belonged to a replica
that stopped; it is reported as failed. Finished jobs are forgotten after `keep_s`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import numpy as np

from serve_app.core.index import shard_for
from serve_app.core.store import MemoryPatch, MemoryStore, NewMemory

JOB_PREFIX = "__job__:"
ACTOR = "ingest"

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
    record_id: str
    saved_status: JobStatus
    saved_at: float


def job_namespace(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


class JobBoard:
    def __init__(
        self, store: MemoryStore, num_shards: int, dim: int, progress_interval_s: float = 2.0,
        stale_after_s: float = 300.0, keep_s: float = 24 * 3600.0,
    ) -> None:
        self.store = store
        self.num_shards = num_shards
        self.dim = dim
        self.progress_interval_s = progress_interval_s
        self.stale_after_s = stale_after_s
        self.keep_s = keep_s
        self._live: dict[str, _Live] = {}  # jobs this replica runs

    def _where(self, job_id: str) -> tuple[str, int]:
        namespace = job_namespace(job_id)
        return namespace, shard_for(namespace, self.num_shards)

    async def create(self, job: Job) -> Job:
        """Record a new job; it is visible to every replica once this returns."""
        namespace, shard = self._where(job.id)
        entry = NewMemory(text=job.filename, tier="semantic", importance=0.5,
                          embedding=np.zeros(self.dim, dtype=np.float32), metadata=asdict(job))
        records, _ = await asyncio.to_thread(self.store.add, namespace, shard, [entry], ACTOR)
        if not job.finished:
            self._live[job.id] = _Live(job, records[0].id, job.status, time.monotonic())
        return job

    async def save(self, job: Job) -> None:
        """Write the job through: always on a status change, otherwise (progress) at most
        every `progress_interval_s`."""
        live = self._live.get(job.id)
        if live is None:
            return
        if job.status == live.saved_status and time.monotonic() - live.saved_at < self.progress_interval_s:
            return
        namespace, shard = self._where(job.id)
        await asyncio.to_thread(self.store.update, namespace, shard,
                                [(live.record_id, MemoryPatch(metadata=asdict(job)))], ACTOR)
        live.saved_status, live.saved_at = job.status, time.monotonic()
        if job.finished:
            del self._live[job.id]

    async def get(self, job_id: str) -> Job | None:
        """The live object if this replica runs the job, else the stored state."""
        if job_id in self._live:
            return self._live[job_id].job
        if not job_id.startswith("job-"):
            return None
        records = await asyncio.to_thread(self.store.all_records, job_namespace(job_id))
        if not records:
            return None
        job = Job(**{k: v for k, v in records[0].metadata.items() if k in JOB_FIELDS})  # tolerate old/new fields
        if not job.finished and time.time() - records[0].updated_at > self.stale_after_s:
            job.status, job.error = "failed", "the replica running this job stopped; upload the file again"
        return job

    async def prune(self) -> int:
        """Forget finished jobs older than `keep_s` (and stale ones); returns how many."""
        cutoff = time.time() - self.keep_s
        doomed = []
        for namespace in await asyncio.to_thread(self.store.users):
            if namespace.startswith(JOB_PREFIX) and namespace[len(JOB_PREFIX):] not in self._live:
                records = await asyncio.to_thread(self.store.all_records, namespace)
                if not records or records[0].updated_at < cutoff:
                    doomed.append(namespace)
        for namespace in doomed:
            await asyncio.to_thread(self.store.forget_user, namespace, shard_for(namespace, self.num_shards))
        return len(doomed)
