"""The product catalog: one key-value space of the store per tenant (`catalog` for the
default tenant, see `tenants.Namespace.space`), searched per
request when the decision stage says the user asks for products.

Writes go to the store (so every replica sees them); each Orchestrator replica searches
its own in-memory copy, rebuilt when the space's version changes. The catalog is small
and read on every request, so this saves a Ray round trip and lets the product decision
run beside the memory search instead of queueing behind it on a VectorSearch replica.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import uuid
from dataclasses import dataclass

import numpy as np

from serve_app.clients import EmbedderClient
from serve_app.core.decision import Constraints
from serve_app.core.index import UserIndex, fuse
from serve_app.core.store import MemoryStore
from serve_app.protocol import Product, ProductOut

SPACE = "catalog"


def product_text(p: Product) -> str:
    tags = ", ".join(p.tags)
    return f"{p.name}: {p.description} (category: {p.category}; tags: {tags})"


def parse_csv(data: bytes) -> list[Product]:
    """CSV with a header row naming at least name, description, category, price, tags.

    Unlike a JSON catalog (where an unknown product field is a 400), columns that are not
    Product fields are ignored: spreadsheet exports carry extras (SKU, stock, notes), and
    a header is matched case-insensitively, so a misspelt column shows up as a missing one.
    """
    rows = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    fields = Product.model_fields
    return [Product.model_validate({key: v for k, v in row.items() if k and (key := k.strip().lower()) in fields},
                                   strict=False)  # CSV cells are text: "9.99" is a price
            for row in rows]


@dataclass(frozen=True)
class CatalogEntry:
    """One product as stored: its id, fields and embedding (owns its JSON form)."""

    id: str
    product: Product
    vector: np.ndarray

    def to_json(self) -> str:
        vector = base64.b64encode(np.asarray(self.vector, dtype=np.float32).tobytes()).decode()
        return json.dumps({"id": self.id, "product": self.product.model_dump(), "vector": vector})

    @classmethod
    def from_json(cls, text: str) -> CatalogEntry:
        raw = json.loads(text)
        vector = np.frombuffer(base64.b64decode(raw["vector"]), dtype=np.float32)
        return cls(raw["id"], Product.model_validate(raw["product"]), vector)

    def out(self, score: float) -> ProductOut:
        p = self.product
        return ProductOut(id=self.id, name=p.name, description=p.description, category=p.category, price=p.price,
                          tags=p.tags, score=round(score, 4))


@dataclass(frozen=True)
class CatalogSnapshot:
    """The whole catalog in this process at one version: a request takes one snapshot
    and uses it throughout (one version read per request)."""

    version: int
    index: UserIndex
    entries: dict[int, CatalogEntry]  # by index key
    categories: list[str]

    @property
    def empty(self) -> bool:
        return not self.entries


class CatalogService:
    def __init__(self, store: MemoryStore, embedder: EmbedderClient, dim: int, space: str = SPACE) -> None:
        self.store = store
        self.embedder = embedder
        self.dim = dim
        self.space = space  # each tenant has its own (`tenants.Namespace.space`)
        self._local: CatalogSnapshot | None = None

    async def load(self, products: list[Product]) -> tuple[int, int]:
        """Replace the catalog in one commit; returns the count and the catalog's version."""
        vectors = await self.embedder.embed([product_text(p) for p in products])
        entries = [CatalogEntry(f"prod-{uuid.uuid4().hex}", p, v) for p, v in zip(products, vectors, strict=True)]
        items = {f"{i:08d}": entry.to_json() for i, entry in enumerate(entries)}
        version = await asyncio.to_thread(self.store.kv_replace, self.space, items)
        return len(entries), version

    async def snapshot(self) -> CatalogSnapshot:
        # A store call never runs on the event loop: with Redis it waits on the network
        # (behind other clients' commands) and would stall every stream of this replica.
        version = await asyncio.to_thread(self.store.kv_version, self.space)
        if self._local is None or self._local.version != version:
            self._local = await asyncio.to_thread(self._build, version)
        return self._local

    def _build(self, version: int) -> CatalogSnapshot:
        stored = self.store.kv_items(self.space)
        entries = {i: CatalogEntry.from_json(stored[key]) for i, key in enumerate(sorted(stored))}
        vectors = np.stack([e.vector for e in entries.values()]) if entries else np.empty((0, self.dim), np.float32)
        index = UserIndex(vectors.shape[1])  # the embedding model's width when the catalog was loaded
        if entries:
            texts = [product_text(e.product) for e in entries.values()]
            index.upsert(np.fromiter(entries, dtype=np.int64), vectors, texts)
        categories = sorted({e.product.category for e in entries.values()} - {""})
        return CatalogSnapshot(version, index, entries, categories)

    @staticmethod
    def search(local: CatalogSnapshot, query: str, vector: np.ndarray, constraints: Constraints,
               k: int) -> list[ProductOut]:
        """Hybrid (dense + BM25) ranking of the whole catalog, then the query's constraints."""
        fetch = max(len(local.entries), 1)  # small by design: rank everything, then filter
        fused = fuse(local.index.dense_search(vector, fetch), local.index.lexical.search(query, fetch))
        ranked = sorted(fused.items(), key=lambda kv: kv[1], reverse=True)
        chosen = [(local.entries[key], score) for key, score in ranked
                  if key in local.entries and _satisfies(local.entries[key].product, constraints)]
        return [entry.out(score) for entry, score in chosen[:k]]


def _satisfies(product: Product, c: Constraints) -> bool:
    if c.category is not None and product.category != c.category:
        return False
    if c.price_min is not None and product.price < c.price_min:
        return False
    return c.price_max is None or product.price <= c.price_max
