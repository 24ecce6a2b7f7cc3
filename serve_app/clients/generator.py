"""Client of the LLM deployment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from serve_app.clients.endpoint import Endpoint
from serve_app.generation import GenerationChunk, GenerationRequest


class GeneratorClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The answer's chunks as the engine produces them."""
        return self._endpoint.stream("generate", request)
