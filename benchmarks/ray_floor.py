"""The floor of serving an LLM on Ray Serve: the least any Ray Serve app pays, with none of memserve.

    serve run benchmarks/ray_floor_<hops>.yaml   # written and started by bench_serving.py

`benchmarks/bench_serving.py --sides ray-floor-2 ray-floor-1` starts this app, with the
same Ray Serve environment (`configs/serve.env`: HAProxy in front, the ingress replica
takes HTTP itself) and the same engine wrapper and settings as memserve:
  hops=2  an ingress deployment that relays the chat to memserve's own LLM deployment
          (`deployments.llm.LLM`) through a streaming deployment handle and writes each
          chunk as OpenAI SSE: the shape of memserve's graph (Orchestrator -> LLM), and of
          Ray Serve LLM's (OpenAI router -> LLMServer), without a line of their logic;
  hops=1  the engine inside the ingress replica: what is left once the deployment-to-
          deployment hop is gone.
memserve minus `ray-floor-2` is what memserve's own code costs; `ray-floor-2` minus `vllm`
is what Ray Serve's path costs on this machine.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from ray import serve
from ray.serve.deployment import Application, Deployment
from ray.serve.handle import DeploymentHandle

from deployments.llm import LLM
from serve_app.engine import LLMEngine
from serve_app.generation import GenerationChunk, GenerationRequest
from serve_app.settings import AppSettings

api = FastAPI()


def sse(model: str, delta: dict[str, Any] | None = None, usage: dict[str, int] | None = None) -> str:
    event: dict[str, Any] = {"id": "floor", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model, "choices": [] if delta is None else [{"index": 0, "delta": delta}]}
    if usage is not None:
        event["usage"] = usage
    return f"data: {json.dumps(event)}\n\n"


async def openai_events(model: str, chunks: AsyncIterator[GenerationChunk]) -> AsyncIterator[str]:
    prompt_tokens = completion_tokens = 0
    async for chunk in chunks:
        prompt_tokens, completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
        if chunk.text:
            yield sse(model, {"content": chunk.text})
    yield sse(model, usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
    yield "data: [DONE]\n\n"


@serve.deployment(name="Ingress", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.2})
@serve.ingress(api)
class Ingress:
    """Turns a chat body into memserve's GenerationRequest and streams the engine's chunks
    back as OpenAI SSE, through the LLM deployment (`llm` given) or an engine of its own."""

    # Async, as the LLM deployment's constructor: vLLM's AsyncLLM is built on the replica's
    # running event loop, the same way in both floors.
    async def __init__(  # type: ignore[misc]  # Ray Serve awaits async constructors
            self, settings: AppSettings, llm: DeploymentHandle[Any] | None = None) -> None:
        self.system_prompt = settings.server.system_prompt
        self.llm = llm.options(stream=True) if llm is not None else None
        self.engine = LLMEngine(settings.llm) if llm is None else None

    def chunks(self, generation: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if self.engine is not None:
            return self.engine.stream(generation)
        assert self.llm is not None
        return cast(AsyncIterator[GenerationChunk], self.llm.generate.remote(generation))

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> StreamingResponse:
        body = await request.json()
        generation = GenerationRequest(request_id=f"floor-{uuid.uuid4().hex}", system_prompt=self.system_prompt,
                                       messages=body["messages"], max_tokens=body.get("max_tokens"),
                                       temperature=body.get("temperature", 0.0))
        return StreamingResponse(openai_events(body["model"], self.chunks(generation)), media_type="text/event-stream")


def build(args: dict[str, str]) -> Application:
    """`hops`: 2 (ingress -> LLM deployment) or 1 (the engine in the ingress replica)."""
    settings, ingress = AppSettings(), cast(Deployment, Ingress)
    if args.get("hops", "2") == "1":
        return ingress.options(ray_actor_options={"num_cpus": 0.65}).bind(settings)
    llm = cast(Deployment, LLM).options(num_replicas=1, max_ongoing_requests=64, max_queued_requests=64,
                      ray_actor_options={"num_cpus": 0.45}).bind(settings.llm)
    return ingress.bind(settings, llm)
