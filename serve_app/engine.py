"""A thin async wrapper around vLLM's `AsyncLLM`: chat templating, sampling, deltas.

Used by the LLM deployment and, without Ray, by `benchmarks/bench_serving.py` to time the
bare engine. vLLM is imported lazily so the rest of the package imports without it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from serve_app import models, reaper
from serve_app.generation import GenerationChunk, GenerationRequest, PromptTooLongError
from serve_app.settings import LLMSettings

if TYPE_CHECKING:
    from vllm.config.model import ModelDType
    from vllm.renderers.chat_utils import ChatCompletionMessageParam

logger = logging.getLogger(__name__)


def _configure_cpu_env(settings: LLMSettings) -> None:
    """vLLM reads these at import/engine start; the engine process inherits them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kvcache_space_gib))


class LLMEngine:
    def __init__(self, settings: LLMSettings) -> None:
        _configure_cpu_env(settings)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.settings = settings
        self.model_path = models.resolve(settings.model)
        started = time.perf_counter()
        args = AsyncEngineArgs(
            model=self.model_path,
            served_model_name=settings.served_model_name,
            dtype=cast("ModelDType", settings.dtype),  # a str in our settings; vLLM checks the name
            max_model_len=settings.max_model_len,
            enforce_eager=settings.enforce_eager,
            enable_prefix_caching=settings.enable_prefix_caching,
            max_num_seqs=settings.max_num_seqs,
            **settings.engine_kwargs,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()
        # If this process is killed, its engine processes must not live on without it.
        self._watcher = reaper.watch_children()
        logger.info("vLLM engine for %s up in %.1f s", self.model_path, time.perf_counter() - started)

    def render(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            # Our messages are plain role/content dicts, which vLLM's message TypedDicts accept;
            # with tokenize=False the template returns text (the stub also allows token ids).
            messages = cast("list[ChatCompletionMessageParam]", request.messages)
            text = cast(str, self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        else:
            text = request.prompt or ""
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def _sampling_params(self, request: GenerationRequest, prompt_len: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        room = self.settings.max_model_len - prompt_len
        wanted = request.max_tokens or min(self.settings.default_max_tokens, room)
        if room <= 0 or wanted > room:
            raise PromptTooLongError(
                f"the prompt has {prompt_len} tokens and {wanted} more were requested, but the "
                f"model's context is {self.settings.max_model_len} tokens"
            )
        params: dict[str, Any] = {"max_tokens": wanted, "output_kind": RequestOutputKind.DELTA}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.stop:
            params["stop"] = request.stop
        if request.seed is not None:
            params["seed"] = request.seed
        return SamplingParams(**params)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Yield text deltas; the last chunk carries `finish_reason` and token counts.
        Raises PromptTooLongError before anything is generated."""
        from vllm.inputs import TokensPrompt

        token_ids = self.render(request)
        params = self._sampling_params(request, len(token_ids))
        completion_tokens = 0
        # mypy reads vLLM as Python 3.10, where the typing.NotRequired of TokensPrompt's optional
        # keys does not exist, so they read as required: the TypedDict is built through Any.
        prompt = cast(Any, TokensPrompt)(prompt_token_ids=token_ids)
        try:
            async for output in self._engine.generate(prompt, params, request.request_id):
                step = output.outputs[0]
                completion_tokens += len(step.token_ids)
                yield GenerationChunk(
                    text=step.text,
                    finish_reason=step.finish_reason,
                    prompt_tokens=len(token_ids),
                    completion_tokens=completion_tokens,
                )
        finally:
            # A client that went away must not keep the engine busy.
            await self._engine.abort(request.request_id)

    async def check_health(self) -> None:
        await self._engine.check_health()

    def shutdown(self) -> None:
        self._engine.shutdown()
