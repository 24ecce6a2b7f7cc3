"""The product catalog: its own namespace in the memory store, searched per request when
the decision stage says the user asks for products."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import numpy as np

from serve_app.core.decision import Constraints
from serve_app.core.index import shard_for
from serve_app.core.retrieval import SearchFilters
from serve_app.core.store import MemoryStore, NewMemory
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


class CatalogService:
    def __init__(self, store: MemoryStore, services: Services, num_shards: int) -> None:
        self.store = store
        self.services = services
        self.shard = shard_for(CATALOG_USER, num_shards)
        self._categories: tuple[int, list[str]] = (-1, [])

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

    async def categories(self) -> list[str]:
        """Known categories, reloaded only when the catalog changed (any replica may load it)."""
        version = await asyncio.to_thread(self.store.user_version, CATALOG_USER)
        if version != self._categories[0]:
            records = await asyncio.to_thread(self.store.all_records, CATALOG_USER)
            self._categories = (version, sorted({r.metadata.get("category", "") for r in records} - {""}))
        return self._categories[1]

    async def search(self, query: str, vector: np.ndarray, constraints: Constraints, k: int) -> list[ProductOut]:
        filters = SearchFilters(
            metadata={"category": constraints.category} if constraints.category else {},
            ranges={"price": (constraints.price_min, constraints.price_max)}
            if constraints.price_min is not None or constraints.price_max is not None else {},
        )
        hits = await self.services.search_memories(CATALOG_USER, vector, k, filters, query_text=query)
        return [_product(h) for h in hits]


def _product(hit: dict[str, Any]) -> ProductOut:
    m = hit["metadata"]
    return ProductOut(id=hit["id"], name=m["name"], description=m.get("description", ""),
                      category=m.get("category", ""), price=m["price"], tags=m.get("tags", []),
                      score=round(hit["score"], 4))
