"""The knowledge base: documents in, searchable chunks out.

Chunks live in the memory store under system namespaces (`__kb__:<scope>:<shard>`, no
caller can name them), spread over every shard, so a knowledge search fans out to all
VectorSearch shards in parallel and merges their top k. A registry namespace
(`__docs__`) holds one record per document (filename, scope, content hash, chunk ids).

Ingestion runs as a background job: parse and chunk, embed in batches through the
Embedder, then commit. Chunks are committed only after every one of them is embedded,
and a failure removes whatever was committed, so a half-ingested document never stays
searchable. A crash between those commits can leave chunks without a registry entry:
searches return only chunks of registered documents, so those never surface either, and
housekeeping beside later uploads deletes them after an hour.
Jobs are kept in the store (`serve_app.jobs`), so any replica reports any job.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from serve_app.core.index import shard_for
from serve_app.core.retrieval import SearchFilters
from serve_app.core.store import MemoryRecord, MemoryStore, NewMemory
from serve_app.ingest.parsers import ChunkOut, DocumentError, chunks_of
from serve_app.jobs import Job, JobBoard
from serve_app.protocol import check_user
from serve_app.services import Services
from serve_app.settings import DocumentSettings

logger = logging.getLogger(__name__)

KB_PREFIX = "__kb__"
REGISTRY = "__docs__"
ACTOR = "ingest"


SPOOL_PIECE = 1024 * 1024
# Housekeeping beside uploads: how often, and how old an unregistered chunk must be
# before it counts as orphaned (far longer than any ingestion's commit phase).
TIDY_EVERY_S = 600.0
ORPHAN_AFTER_S = 3600.0


def _chunks_from_file(path: Path, filename: str, size: int, overlap: int) -> list[ChunkOut]:
    with path.open("rb") as stream:
        return list(chunks_of(stream, filename, size, overlap))


def kb_namespace(scope: str, shard: int) -> str:
    return f"{KB_PREFIX}:{scope}:{shard}"


def parse_scope(scope: str) -> str:
    """`shared` or `user:<id>`; raises ValueError otherwise."""
    if scope == "shared":
        return scope
    if scope.startswith("user:") and len(scope) > 5:
        check_user(scope[5:])
        return scope
    raise ValueError("scope must be 'shared' or 'user:<id>'")


@dataclass(frozen=True)
class Registry:
    """The registered documents at one registry version, indexed once per version: a
    request takes it as its snapshot of the knowledge base."""

    version: int
    records: list[MemoryRecord]
    documents_by_scope: dict[str, frozenset[str]]

    @classmethod
    def of(cls, version: int, records: list[MemoryRecord]) -> Registry:
        by_scope: dict[str, set[str]] = {}
        for r in records:
            by_scope.setdefault(r.metadata["scope"], set()).add(r.metadata["document_id"])
        return cls(version, records, {scope: frozenset(ids) for scope, ids in by_scope.items()})


class KnowledgeService:
    def __init__(self, store: MemoryStore, services: Services, settings: DocumentSettings, dim: int) -> None:
        self.store = store
        self.services = services
        self.settings = settings
        self.dim = dim
        self.registry_shard = shard_for(REGISTRY, services.num_shards)
        self.jobs = JobBoard(store, services.num_shards, dim)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._registry = Registry.of(-1, [])
        self._tidied_at = -TIDY_EVERY_S

    # ------------------------------------------------------------------ registry

    async def registry(self) -> Registry:
        """The registry at its current version (one version read; records reread and
        indexed only when the registry changed)."""
        version = await asyncio.to_thread(self.store.user_version, REGISTRY)
        if version != self._registry.version:
            self._registry = Registry.of(version, await asyncio.to_thread(self.store.all_records, REGISTRY))
        return self._registry

    async def documents(self) -> list[MemoryRecord]:
        return (await self.registry()).records

    # ------------------------------------------------------------------ ingestion

    async def spool(self, upload: BinaryIO, directory: Path) -> tuple[Path, str]:
        """Copy an upload to a temporary file piece by piece (a large file never sits
        whole in memory), checking the size limit and hashing the content on the way."""
        directory.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        handle, name = tempfile.mkstemp(dir=directory, suffix=".upload")
        try:
            with os.fdopen(handle, "wb") as out:
                while piece := await asyncio.to_thread(upload.read, SPOOL_PIECE):
                    size += len(piece)
                    if size > self.settings.max_bytes:
                        raise DocumentError(f"the file is larger than {self.settings.max_bytes} bytes")
                    digest.update(piece)
                    out.write(piece)
            if size == 0:
                raise DocumentError("the file is empty")
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name), digest.hexdigest()

    async def submit(self, filename: str, path: Path, content_hash: str, scope: str) -> Job:
        """Start ingesting a spooled upload in the background (the job owns `path` and
        removes it). Re-uploading the same content to the same scope is a no-op."""
        for record in await self.documents():
            if record.metadata["scope"] == scope and record.metadata["content_hash"] == content_hash:
                path.unlink(missing_ok=True)
                return await self.jobs.create(Job(
                    f"job-{uuid.uuid4().hex}", record.metadata["document_id"], filename, scope, "done",
                    record.metadata["chunks"], record.metadata["chunks"]))
        try:
            job = await self.jobs.create(Job(f"job-{uuid.uuid4().hex}", f"doc-{uuid.uuid4().hex}", filename, scope))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._spawn(self._ingest(job, path, content_hash))
        self._spawn(self.tidy_if_due())
        return job

    async def tidy_if_due(self) -> None:
        """Forget old jobs and delete orphaned chunks, at most every `TIDY_EVERY_S` per
        replica (both scan namespaces); run beside an upload."""
        if time.monotonic() - self._tidied_at < TIDY_EVERY_S:
            return
        self._tidied_at = time.monotonic()
        jobs, chunks = await self.jobs.prune(), await self.collect_orphans(ORPHAN_AFTER_S)
        if jobs or chunks:
            logger.info("tidied %d old jobs and %d orphaned chunks", jobs, chunks)

    async def collect_orphans(self, older_than_s: float) -> int:
        """Delete chunks of documents that never got registered (their ingestion died
        between commit and registration) once they are older than any ingestion takes.
        They were never searchable; this reclaims their space. Returns how many."""
        registered = {r.metadata["document_id"] for r in await self.documents()}
        cutoff = time.time() - older_than_s
        removed = 0
        for namespace in await asyncio.to_thread(self.store.users):
            if not namespace.startswith(f"{KB_PREFIX}:"):
                continue
            records = await asyncio.to_thread(self.store.all_records, namespace)
            doomed = [r.id for r in records
                      if r.metadata.get("document_id") not in registered and r.created_at < cutoff]
            if doomed:
                shard = int(namespace.rsplit(":", 1)[1])
                await asyncio.to_thread(self.store.delete, namespace, shard, doomed, ACTOR)
                removed += len(doomed)
        return removed

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ingest(self, job: Job, path: Path, content_hash: str) -> None:
        job.status = "running"
        committed: list[tuple[int, list[str]]] = []
        try:
            await self.jobs.save(job)
            s = self.settings
            chunks = await asyncio.to_thread(_chunks_from_file, path, job.filename, s.chunk_size, s.chunk_overlap)
            job.chunks_total = len(chunks)
            vectors = []
            for start in range(0, len(chunks), s.embed_batch):
                batch = chunks[start:start + s.embed_batch]
                vectors.append(await self.services.embed([c.text for c in batch]))
                job.chunks_done = start + len(batch)
                await self.jobs.save(job)
            matrix = np.concatenate(vectors)
            for shard, items in self._spread(job, chunks, matrix).items():
                records, _ = await asyncio.to_thread(self.store.add, kb_namespace(job.scope, shard), shard, items, ACTOR)
                committed.append((shard, [r.id for r in records]))
            await asyncio.to_thread(self._register, job, content_hash, committed)
            job.status = "done"
            await self.jobs.save(job)
        except DocumentError as exc:
            await self._fail(job, str(exc), committed)
        except Exception as exc:  # noqa: BLE001 - the job reports it; the replica goes on
            logger.exception("ingesting %s failed", job.filename)
            await self._fail(job, f"internal error: {exc}", committed)
        finally:
            path.unlink(missing_ok=True)

    def _spread(self, job: Job, chunks: list[ChunkOut], vectors: np.ndarray) -> dict[int, list[NewMemory]]:
        by_shard: dict[int, list[NewMemory]] = {}
        uploaded = time.time()
        for chunk, vector in zip(chunks, vectors):
            shard = shard_for(f"{job.document_id}:{chunk.index}", self.services.num_shards)
            metadata = {"document_id": job.document_id, "filename": job.filename, "scope": job.scope,
                        "chunk_index": chunk.index, "page": chunk.page,
                        "rows": list(chunk.rows) if chunk.rows else None, "uploaded_at": uploaded}
            by_shard.setdefault(shard, []).append(
                NewMemory(text=chunk.text, tier="semantic", importance=0.5, embedding=vector, metadata=metadata))
        return by_shard

    def _register(self, job: Job, content_hash: str, committed: list[tuple[int, list[str]]]) -> None:
        metadata = {"document_id": job.document_id, "filename": job.filename, "scope": job.scope,
                    "chunks": job.chunks_total, "content_hash": content_hash, "created_at": time.time(),
                    "chunk_ids": {str(shard): ids for shard, ids in committed}}
        entry = NewMemory(text=job.filename, tier="semantic", importance=0.5,
                          embedding=np.zeros(self.dim, dtype=np.float32), metadata=metadata)
        self.store.add(REGISTRY, self.registry_shard, [entry], ACTOR)

    async def _fail(self, job: Job, reason: str, committed: list[tuple[int, list[str]]]) -> None:
        for shard, ids in committed:  # nothing half-ingested stays searchable
            await asyncio.to_thread(self.store.delete, kb_namespace(job.scope, shard), shard, ids, ACTOR)
        job.status, job.error = "failed", reason
        await self.jobs.save(job)

    async def delete(self, document_id: str) -> bool:
        record = next((r for r in await self.documents() if r.metadata["document_id"] == document_id), None)
        if record is None:
            return False
        scope = record.metadata["scope"]
        for shard, ids in record.metadata["chunk_ids"].items():
            await asyncio.to_thread(self.store.delete, kb_namespace(scope, int(shard)), int(shard), ids, ACTOR)
        await asyncio.to_thread(self.store.delete, REGISTRY, self.registry_shard, [record.id], ACTOR)
        return True

    # ------------------------------------------------------------------ search

    async def search(self, query: str, vector: np.ndarray, scopes: list[str], k: int, documents: set[str],
                     min_similarity: float = -1.0) -> list[dict[str, Any]]:
        """Every shard of every scope in parallel; merged by score. Only chunks of
        `documents` (the registered ones, from the caller's registry snapshot) count."""
        filters = SearchFilters(min_similarity=min_similarity)
        calls = [
            self.services.search_memories(kb_namespace(scope, shard), vector, k, filters, query_text=query, shard=shard)
            for scope in scopes for shard in range(self.services.num_shards)
        ]
        hits = [hit for found in await asyncio.gather(*calls) for hit in found
                if hit["metadata"].get("document_id") in documents]
        hits.sort(key=lambda h: (h["score"], h["similarity"]), reverse=True)
        return hits[:k]
