"""LLM deployment: a vLLM engine inside the replica, streaming text deltas."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from ray import serve

from serve_app.engine import LLMEngine
from serve_app.generation import GenerationChunk, GenerationRequest
from serve_app.settings import LLMSettings

logger = logging.getLogger("ray.serve")


@serve.deployment(name="LLM", ray_actor_options={"num_cpus": 1})
class LLM:
    async def __init__(self, settings: LLMSettings) -> None:  # type: ignore[misc]  # Ray Serve awaits async constructors
        self.settings = settings
        self.engine = LLMEngine(settings)
        if settings.warmup:
            await self._warm_up()

    async def _warm_up(self) -> None:
        """One short generation so the first user request does not pay for lazy init."""
        started = time.perf_counter()
        request = GenerationRequest(
            request_id="warmup", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0.0
        )
        async for _ in self.engine.stream(request):
            pass
        logger.info("LLM warm-up generation took %.2f s", time.perf_counter() - started)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        async for chunk in self.engine.stream(request):
            yield chunk

    async def check_health(self) -> None:
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
