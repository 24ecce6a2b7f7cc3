"""One small typed client per deployment, over one `Endpoint` seam (see `endpoint.py`).

`Clients` is what the request logic of an Orchestrator replica is given: built over Ray
handles by the Orchestrator deployment, over local objects by the unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serve_app.clients.cache import CacheClient, NearCacheClient
from serve_app.clients.consolidator import ConsolidatorClient
from serve_app.clients.embedder import EmbedderClient
from serve_app.clients.endpoint import Endpoint, HandleEndpoint, LocalEndpoint
from serve_app.clients.generator import GeneratorClient
from serve_app.clients.retriever import RetrieverClient
from serve_app.settings import CacheSettings

__all__ = [
    "CacheClient", "Clients", "ConsolidatorClient", "EmbedderClient", "Endpoint", "GeneratorClient",
    "HandleEndpoint", "LocalEndpoint", "NearCacheClient", "RetrieverClient",
]


@dataclass(frozen=True)
class Clients:
    embedder: EmbedderClient
    retriever: RetrieverClient
    generator: GeneratorClient
    cache: CacheClient
    consolidator: ConsolidatorClient

    @classmethod
    def over(
        cls, *, embedder: Endpoint, shards: Sequence[Endpoint], llm: Endpoint, cache: Endpoint,
        consolidator: Endpoint, cache_settings: CacheSettings,
    ) -> Clients:
        """Wire every client over its endpoint; the near cache when it is configured."""
        near = cache_settings.local_ttl_s > 0
        return cls(
            embedder=EmbedderClient(embedder),
            retriever=RetrieverClient(shards),
            generator=GeneratorClient(llm),
            cache=NearCacheClient(cache, cache_settings.local_max_entries, cache_settings.local_ttl_s)
            if near else CacheClient(cache),
            consolidator=ConsolidatorClient(consolidator),
        )
