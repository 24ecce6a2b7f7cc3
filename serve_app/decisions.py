"""The decision service: intent, products and quick replies for one query, without the LLM.

It embeds the intent prototypes once per replica, decides with keywords plus prototype
similarity (`serve_app.core.decision`), and searches the request's catalog snapshot when
the query asks for products.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serve_app.catalog import CatalogService, CatalogSnapshot
from serve_app.clients import EmbedderClient
from serve_app.core.decision import DecisionSettings, decide, quick_replies
from serve_app.protocol import ProductOut


@dataclass(frozen=True)
class ProductChoice:
    """What the decision stage adds to an answer."""

    intent: str
    quick_replies: list[str]
    products: list[ProductOut] = field(default_factory=list)


class DecisionService:
    def __init__(self, settings: DecisionSettings, embedder: EmbedderClient, catalog: CatalogService) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self._prototypes: dict[str, np.ndarray] | None = None

    async def choose(self, query: str, vector: np.ndarray | None, catalog: CatalogSnapshot | None) -> ProductChoice:
        """The intent and, when the query asks for products, the best matches of `catalog`
        (keywords alone decide when the query could not be embedded)."""
        categories = catalog.categories if catalog is not None else []
        decision = decide(query, vector, await self._prototype_vectors(), categories, self.settings)
        products: list[ProductOut] = []
        if decision.wants_products and catalog is not None and vector is not None:
            products = self.catalog.search(catalog, query, vector, decision.constraints, self.settings.max_products)
        return ProductChoice(decision.intent, quick_replies(decision, [p.name for p in products]), products)

    async def annotate(self, query: str, vector: np.ndarray | None) -> ProductChoice:
        """Intent and quick replies when there is no catalog to search; embeds the query
        itself when the request had no other use for its vector."""
        vector = vector if vector is not None else await self.embedder.embed_one(query)
        return await self.choose(query, vector, None)

    async def _prototype_vectors(self) -> dict[str, np.ndarray]:
        if self._prototypes is None:
            protos = self.settings.prototypes
            vectors = await self.embedder.embed([t for examples in protos.values() for t in examples])
            out, start = {}, 0
            for intent, examples in protos.items():
                out[intent] = vectors[start:start + len(examples)]
                start += len(examples)
            self._prototypes = out
        return self._prototypes
