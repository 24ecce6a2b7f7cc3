"""Client of the LLM deployment."""

from __future__ import annotations

from collections.abc import AsyncIterator

from serve_app.clients.endpoint import Endpoint
from serve_app.generation import GenerationChunk, GenerationRequest, GenerationResult


class GeneratorClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The answer's chunks as the engine produces them."""
        return self._endpoint.stream("generate", request)

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        """The whole first choice, for callers that need all of the answer before using it
        (a JSON answer is only parsable once complete)."""
        chunks = [chunk async for chunk in self.stream(request)]
        return GenerationResult.collect(chunks)
