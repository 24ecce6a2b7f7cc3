"""The knowledge base: documents in, searchable chunks out.

Chunks live in the memory store under system namespaces (`__kb__:<scope>:<shard>`, no
caller can name them), spread over every shard, so a knowledge search fans out to all
VectorSearch shards in parallel and merges their top k. The document registry is a
key-value space of the store (`documents`): one typed `Document` per document (filename,
scope, content hash, chunk ids); it never goes through the shards' change logs.

Ingestion runs as a background job: parse and chunk, embed in batches through the
Embedder, then commit. Chunks are committed only after every one of them is embedded,
and a failure removes whatever was committed, so a half-ingested document never stays
searchable. A crash between those commits can leave chunks without a registry entry:
searches return only chunks of registered documents, so those never surface either, and
housekeeping beside later uploads deletes them after an hour.
Jobs are kept in the store (`serve_app.jobs`), so any replica reports any job. Which
scopes and documents a request may read is decided here too (`scope_for`). A service is
one tenant's view (`namespace`): it lists, deletes, reports jobs of and searches only
scopes of that tenant (the registry and the jobs are shared spaces, filtered here).
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

from serve_app.clients import EmbedderClient, RetrieverClient
from serve_app.core.retrieval import SearchFilters, ShardQuery
from serve_app.core.store import MemoryStore
from serve_app.documents import KB_PREFIX, ChunkRef, Document, kb_namespace, parse_scope
from serve_app.ingest.ingestion import REGISTRY_SPACE as SPACE
from serve_app.ingest.ingestion import Ingestion
from serve_app.ingest.parsers import DocumentError
from serve_app.jobs import Job, JobBoard
from serve_app.protocol import SourceOut
from serve_app.settings import DocumentSettings
from serve_app.tenants import Namespace

logger = logging.getLogger(__name__)

ACTOR = "ingest"
SHARED_SCOPE = "shared"

SPOOL_PIECE = 1024 * 1024
# Housekeeping beside uploads: how often, and how old an unregistered chunk must be
# before it counts as orphaned (far longer than any ingestion's commit phase).
TIDY_EVERY_S = 600.0
ORPHAN_AFTER_S = 3600.0

__all__ = ["KnowledgeScope", "KnowledgeService", "Registry", "kb_namespace", "parse_scope"]


@dataclass(frozen=True)
class Registry:
    """The registered documents at one registry version, indexed once per version: a
    request takes it as its snapshot of the knowledge base."""

    version: int
    documents: list[Document]
    documents_by_scope: dict[str, frozenset[str]]

    @classmethod
    def of(cls, version: int, documents: list[Document]) -> Registry:
        by_scope: dict[str, set[str]] = {}
        for d in documents:
            by_scope.setdefault(d.scope, set()).add(d.id)
        return cls(version, documents, {scope: frozenset(ids) for scope, ids in by_scope.items()})


@dataclass(frozen=True)
class KnowledgeScope:
    """What one request may read: scopes with documents (the shared one and the user's
    own), the documents registered there, and the registry version they were read at."""

    scopes: tuple[str, ...] = ()
    documents: frozenset[str] = frozenset()
    version: int = 0

    @property
    def empty(self) -> bool:
        return not self.scopes


class KnowledgeService:
    def __init__(
        self, store: MemoryStore, embedder: EmbedderClient, retriever: RetrieverClient, settings: DocumentSettings,
        namespace: Namespace | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace or Namespace()
        self.retriever = retriever
        self.settings = settings
        self.jobs = JobBoard(store)
        self.ingestion = Ingestion(store, embedder, retriever.num_shards, settings, self.jobs)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._registry = Registry.of(-1, [])
        self._tidied_at = -TIDY_EVERY_S

    # ------------------------------------------------------------------ registry

    async def registry(self) -> Registry:
        """The registry at its current version (one version read; documents reread and
        indexed only when the registry changed)."""
        version = await asyncio.to_thread(self.store.kv_version, SPACE)
        if version != self._registry.version:
            stored = await asyncio.to_thread(self.store.kv_items, SPACE)
            documents = sorted((Document.from_json(v) for v in stored.values()), key=lambda d: d.created_at)
            self._registry = Registry.of(version, documents)
        return self._registry

    def owns(self, scope: str) -> bool:
        """Whether a stored scope is this tenant's."""
        return self.namespace.external_scope(scope) is not None

    async def documents(self) -> list[Document]:
        """This tenant's documents."""
        return [d for d in (await self.registry()).documents if self.owns(d.scope)]

    async def job(self, job_id: str) -> Job | None:
        """An ingestion job of this tenant (another tenant's is None, as an unknown one)."""
        job = await self.jobs.get(job_id)
        return job if job is not None and self.owns(job.scope) else None

    async def scope_for(self, user: str | None) -> KnowledgeScope:
        """The knowledge one request may read: the tenant's shared scope and the user's
        own (`user` is the stored name, `tenants.Namespace.user`)."""
        if not self.settings.enabled:
            return KnowledgeScope()
        registry = await self.registry()
        wanted = [self.namespace.shared_scope] + ([f"user:{user}"] if user else [])
        scopes = tuple(scope for scope in wanted if scope in registry.documents_by_scope)
        documents = frozenset().union(*(registry.documents_by_scope[scope] for scope in scopes))
        return KnowledgeScope(scopes, documents, registry.version)

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
        for document in await self.documents():
            if document.scope == scope and document.content_hash == content_hash:
                path.unlink(missing_ok=True)
                return await self.jobs.create(Job(f"job-{uuid.uuid4().hex}", document.id, filename, scope, "done",
                                                  document.chunks, document.chunks))
        try:
            job = await self.jobs.create(Job(f"job-{uuid.uuid4().hex}", f"doc-{uuid.uuid4().hex}", filename, scope))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._spawn(self.ingestion.run(job, path, content_hash))
        self._spawn(self.tidy_if_due())
        return job

    async def tidy_if_due(self) -> None:
        """Forget old jobs and delete orphaned chunks, at most every `TIDY_EVERY_S` per
        replica (both scan the store); run beside an upload."""
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
        registered = {d.id for d in (await self.registry()).documents}  # every tenant's
        cutoff = time.time() - older_than_s
        removed = 0
        for namespace in await asyncio.to_thread(self.store.users):
            if not namespace.startswith(f"{KB_PREFIX}:"):
                continue
            records = await asyncio.to_thread(self.store.all_records, namespace)
            doomed = [r.id for r in records
                      if ChunkRef.of(r.metadata).document_id not in registered and r.created_at < cutoff]
            if doomed:
                shard = int(namespace.rsplit(":", 1)[1])
                await asyncio.to_thread(self.store.delete, namespace, shard, doomed, ACTOR)
                removed += len(doomed)
        return removed

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def delete(self, document_id: str) -> bool:
        """Every chunk on every shard, then the registry entry."""
        document = next((d for d in await self.documents() if d.id == document_id), None)
        if document is None:
            return False
        for shard, ids in document.chunk_ids.items():
            await asyncio.to_thread(self.store.delete, kb_namespace(document.scope, shard), shard, ids, ACTOR)
        await asyncio.to_thread(self.store.kv_delete, SPACE, [document.id])
        return True

    # ------------------------------------------------------------------ search

    async def search(self, query: str, vector: Any, scope: KnowledgeScope, k: int,
                     min_similarity: float = -1.0) -> list[SourceOut]:
        """Every shard of every scope in parallel, merged by score. Only chunks of the
        scope's documents (the registered ones, from the caller's snapshot) count."""
        filters = SearchFilters(min_similarity=min_similarity)
        calls = [
            self.retriever.search(ShardQuery(kb_namespace(name, shard), vector, k, filters, query), shard=shard)
            for name in scope.scopes for shard in range(self.retriever.num_shards)
        ]
        hits = [hit for found in await asyncio.gather(*calls) for hit in found
                if ChunkRef.of(hit.metadata).document_id in scope.documents]
        hits.sort(key=lambda h: (h.score, h.similarity), reverse=True)
        return [ChunkRef.of(h.metadata).source(h.text, h.score) for h in hits[:k]]
