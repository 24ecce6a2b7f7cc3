"""The product catalog: its own namespace in the memory store (`__catalog__`, which no
caller can name), searched per request when the decision stage says the user asks for
products."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from dataclasses import dataclass

import numpy as np

from serve_app.core.decision import Constraints
from serve_app.core.index import UserIndex, fuse, shard_for
from serve_app.core.retrieval import SearchFilters
from serve_app.core.store import MemoryRecord, MemoryStore, NewMemory
from serve_app.protocol import Product, ProductOut
from serve_app.services import Services

CATALOG_USER = "__catalog__"  # unreachable for callers: user ids may not start with "__"


def product_text(p: Product) -> str:
    tags = ", ".join(p.tags)
    return f"{p.name}: {p.description} (category: {p.category}; tags: {tags})"


def parse_csv(data: bytes) -> list[Product]:
    """CSV with a header row naming at least name, description, category, price, tags."""
    rows = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    return [Product.model_validate({k.strip().lower(): v for k, v in row.items() if k}) for row in rows]


@dataclass
class CatalogSnapshot:
    """The whole catalog in this process: its indexes and records, at one store version.
    A request takes one snapshot and uses it throughout (one version read per request)."""

    version: int
    index: UserIndex
    records: dict[int, MemoryRecord]
    categories: list[str]


class CatalogService:
    """Writes go to the store (so every replica sees them); each Orchestrator replica
    searches its own in-memory copy, rebuilt when the catalog's version changes. The
    catalog is small and read on every request, so this saves a Ray round trip and lets
    the product decision run beside the memory search instead of queueing behind it on
    the same VectorSearch replica."""

    def __init__(self, store: MemoryStore, services: Services, num_shards: int, dim: int = 384) -> None:
        self.store = store
        self.services = services
        self.shard = shard_for(CATALOG_USER, num_shards)
        self.dim = dim
        self._local: CatalogSnapshot | None = None

    async def load(self, products: list[Product]) -> tuple[int, int]:
        """Replace the catalog: forget the old one, store the new one (one commit)."""
        vectors = await self.services.embed([product_text(p) for p in products])
        items = [
            NewMemory(text=product_text(p), tier="semantic", importance=0.5, embedding=v, metadata=p.model_dump())
            for p, v in zip(products, vectors)
        ]
        await asyncio.to_thread(self.store.forget_user, CATALOG_USER, self.shard)
        _, seq = await asyncio.to_thread(self.store.add, CATALOG_USER, self.shard, items, "catalog")
        return len(items), seq

    async def snapshot(self) -> CatalogSnapshot:
        # A store call never runs on the event loop: with Redis it waits on the network
        # (behind other clients' commands) and would stall every stream of this replica.
        version = await asyncio.to_thread(self.store.user_version, CATALOG_USER)
        if self._local is None or self._local.version != version:
            self._local = await asyncio.to_thread(self._build, version)
        return self._local

    def _build(self, version: int) -> CatalogSnapshot:
        records = {r.key: r for r in self.store.all_records(CATALOG_USER)}
        keys, vectors, texts = self.store.user_index_data(CATALOG_USER)
        index = UserIndex(vectors.shape[1] if len(keys) else self.dim)
        if len(keys):
            index.upsert(keys, vectors, texts)
        categories = sorted({r.metadata.get("category", "") for r in records.values()} - {""})
        return CatalogSnapshot(version, index, records, categories)

    @staticmethod
    def search(local: CatalogSnapshot, query: str, vector: np.ndarray, constraints: Constraints,
               k: int) -> list[ProductOut]:
        filters = SearchFilters(
            metadata={"category": constraints.category} if constraints.category else {},
            ranges={"price": (constraints.price_min, constraints.price_max)}
            if constraints.price_min is not None or constraints.price_max is not None else {},
        )
        fetch = max(len(local.records), 1)  # small by design: rank everything, then filter
        dense = local.index.dense_search(vector, fetch)
        fused = fuse(dense, local.index.lexical.search(query, fetch))
        similarity = dict(dense)
        now = time.time()
        ranked = sorted(fused.items(), key=lambda kv: kv[1], reverse=True)
        chosen = [
            (local.records[key], score) for key, score in ranked
            if key in local.records and filters.accepts(local.records[key], similarity.get(key, 0.0), now)
        ][:k]
        return [_product(record, score) for record, score in chosen]


def _product(record: MemoryRecord, score: float) -> ProductOut:
    m = record.metadata
    return ProductOut(id=record.id, name=m["name"], description=m.get("description", ""),
                      category=m.get("category", ""), price=m["price"], tags=m.get("tags", []),
                      score=round(score, 4))
