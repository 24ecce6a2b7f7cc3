"""One document's ingestion job: parse and chunk, embed in batches, commit, register.

Chunks are committed only after every one of them is embedded, and a failure removes
whatever was committed, so a half-ingested document never stays searchable. The registry
entry is written last; a crash before it leaves chunks no search returns (searches keep
only chunks of registered documents), which housekeeping deletes later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np

from serve_app.clients import EmbedderClient
from serve_app.core.sharding import shard_for
from serve_app.core.store import MemoryStore, NewMemory
from serve_app.documents import ChunkRef, Document, kb_namespace
from serve_app.ingest.parsers import ChunkOut, DocumentError, chunks_of
from serve_app.jobs import Job, JobBoard
from serve_app.settings import DocumentSettings

logger = logging.getLogger(__name__)

REGISTRY_SPACE = "documents"
ACTOR = "ingest"


def _chunks_from_file(path: Path, filename: str, size: int, overlap: int) -> list[ChunkOut]:
    with path.open("rb") as stream:
        return list(chunks_of(stream, filename, size, overlap))


class Ingestion:
    def __init__(
        self, store: MemoryStore, embedder: EmbedderClient, num_shards: int, settings: DocumentSettings,
        jobs: JobBoard,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.num_shards = num_shards
        self.settings = settings
        self.jobs = jobs

    async def run(self, job: Job, path: Path, content_hash: str) -> None:
        """Ingest `path` (and remove it), reporting progress and the outcome in `job`."""
        job.status = "running"
        committed: dict[int, list[str]] = {}
        try:
            await self.jobs.save(job)
            s = self.settings
            chunks = await asyncio.to_thread(_chunks_from_file, path, job.filename, s.chunk_size, s.chunk_overlap)
            job.chunks_total = len(chunks)
            vectors = await self._embed(job, chunks)
            for shard, items in self._spread(job, chunks, vectors).items():
                namespace = kb_namespace(job.scope, shard)
                records, _ = await asyncio.to_thread(self.store.add, namespace, shard, items, ACTOR)
                committed[shard] = [r.id for r in records]
            document = Document(job.document_id, job.filename, job.scope, job.chunks_total, content_hash,
                                time.time(), committed)
            await asyncio.to_thread(self.store.kv_put, REGISTRY_SPACE, document.id, document.to_json())
            job.status = "done"
            await self.jobs.save(job)
        except DocumentError as exc:
            await self._fail(job, str(exc), committed)
        except Exception as exc:  # the job reports it; the replica goes on
            logger.exception("ingesting %s failed", job.filename)
            await self._fail(job, f"internal error: {exc}", committed)
        finally:
            path.unlink(missing_ok=True)

    async def _embed(self, job: Job, chunks: list[ChunkOut]) -> np.ndarray:
        vectors = []
        for start in range(0, len(chunks), self.settings.embed_batch):
            batch = chunks[start:start + self.settings.embed_batch]
            vectors.append(await self.embedder.embed([c.text for c in batch]))
            job.chunks_done = start + len(batch)
            await self.jobs.save(job)
        return np.concatenate(vectors)

    def _spread(self, job: Job, chunks: list[ChunkOut], vectors: np.ndarray) -> dict[int, list[NewMemory]]:
        """Chunks over every shard, so a knowledge search uses all of them at once."""
        by_shard: dict[int, list[NewMemory]] = {}
        for chunk, vector in zip(chunks, vectors, strict=True):  # one vector per chunk
            shard = shard_for(f"{job.document_id}:{chunk.index}", self.num_shards)
            ref = ChunkRef(job.document_id, job.filename, job.scope, chunk.index, chunk.page,
                           list(chunk.rows) if chunk.rows else None)
            by_shard.setdefault(shard, []).append(
                NewMemory(text=chunk.text, tier="semantic", importance=0.5, embedding=vector, metadata=ref.metadata()))
        return by_shard

    async def _fail(self, job: Job, reason: str, committed: dict[int, list[str]]) -> None:
        for shard, ids in committed.items():  # nothing half-ingested stays searchable
            await asyncio.to_thread(self.store.delete, kb_namespace(job.scope, shard), shard, ids, ACTOR)
        job.status, job.error = "failed", reason
        await self.jobs.save(job)
