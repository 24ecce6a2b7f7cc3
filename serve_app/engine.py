"""A thin async wrapper around vLLM's `AsyncLLM`: chat templating, sampling, deltas.

Used by the LLM deployment and, without Ray, by `benchmarks/bench_serving.py` to time the
bare engine. vLLM is imported lazily so the rest of the package imports without it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from serve_app import models, reaper
from serve_app.core.budget import Trimmed, fit
from serve_app.core.prompt import PromptContext, build_messages, completion_prompt
from serve_app.generation import (
    GenerationChunk,
    GenerationRequest,
    InvalidGenerationRequest,
    PromptTooLongError,
    TokenLogprob,
    TopLogprob,
)
from serve_app.settings import LLMSettings

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config.model import ModelDType
    from vllm.logprobs import Logprob
    from vllm.renderers.chat_utils import ChatCompletionMessageParam

logger = logging.getLogger(__name__)


def _configure_cpu_env(settings: LLMSettings) -> None:
    """vLLM reads these at import/engine start; the engine process inherits them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kvcache_space_gib))


class PromptRenderer:
    """The prompt's token ids: the caller's messages with as much of memserve's context as
    fits the model's window beside the answer's `max_tokens` (or the default answer length)."""

    def __init__(self, tokenizer: Any, max_model_len: int, default_max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.default_max_tokens = default_max_tokens

    def render(self, request: GenerationRequest) -> tuple[list[int], Trimmed | None]:
        budget = self.max_model_len - (request.max_tokens or self.default_max_tokens)
        tokens, _, trimmed = fit(request.context, lambda context: self.tokens(request, context), budget, self.cost)
        return tokens, trimmed or None

    def tokens(self, request: GenerationRequest, context: PromptContext) -> list[int]:
        if request.messages is not None:
            messages = build_messages(request.system_prompt, request.messages, context)
            # Our messages are plain role/content dicts, which vLLM's message TypedDicts accept;
            # with tokenize=False the template returns text (the stub also allows token ids).
            chat = cast("list[ChatCompletionMessageParam]", messages)
            text = cast(str, self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
        else:
            text = completion_prompt(request.prompt or "", context)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def cost(self, line: str) -> int:
        """One context line's tokens, plus its bullet and line break."""
        return len(self.tokenizer.encode(line, add_special_tokens=False)) + 2


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
        self.renderer = PromptRenderer(self._tokenizer, settings.max_model_len, settings.default_max_tokens)
        # If this process is killed, its engine processes must not live on without it.
        self._watcher = reaper.watch_children()
        logger.info("vLLM engine for %s up in %.1f s", self.model_path, time.perf_counter() - started)

    def _sampling_params(self, request: GenerationRequest, prompt_len: int) -> SamplingParams:
        room = self.settings.max_model_len - prompt_len
        wanted = request.max_tokens or min(self.settings.default_max_tokens, room)
        if room <= 0 or wanted > room:
            raise PromptTooLongError(
                f"the prompt has {prompt_len} tokens and {wanted} more were requested, but the "
                f"model's context is {self.settings.max_model_len} tokens"
            )
        return sampling_params(request, wanted)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Yield text deltas of every choice (`index`); each choice's last chunk carries its
        `finish_reason`. Raises PromptTooLongError or InvalidGenerationRequest before
        anything is generated."""
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt

        token_ids, trimmed = self.renderer.render(request)
        counts = [0] * request.n
        # mypy reads vLLM as Python 3.10, where the typing.NotRequired of TokensPrompt's optional
        # keys does not exist, so they read as required: the TypedDict is built through Any.
        prompt = cast(Any, TokensPrompt)(prompt_token_ids=token_ids)
        try:
            params = self._sampling_params(request, len(token_ids))
            async for output in self._engine.generate(prompt, params, request.request_id):
                for step in output.outputs:
                    counts[step.index] += len(step.token_ids)
                    logprobs = None if request.logprobs is None else token_logprobs(
                        step.token_ids, step.logprobs or [], request.logprobs, self._decode)
                    yield GenerationChunk(
                        text=step.text, finish_reason=step.finish_reason, prompt_tokens=len(token_ids),
                        completion_tokens=counts[step.index], index=step.index, logprobs=logprobs,
                        trimmed=trimmed,
                    )
                    trimmed = None  # said once, on the first chunk
        except VLLMClientError as exc:  # the engine's own checks of the parameters (vocabulary, limits)
            raise InvalidGenerationRequest(str(exc), getattr(exc, "parameter", None)) from None
        finally:
            # A client that went away must not keep the engine busy.
            await self._engine.abort(request.request_id)

    def _decode(self, token_id: int) -> str:
        return str(self._tokenizer.decode([token_id]))

    async def check_health(self) -> None:
        await self._engine.check_health()

    def shutdown(self) -> None:
        self._engine.shutdown()


def sampling_params(request: GenerationRequest, max_tokens: int) -> SamplingParams:
    """vLLM's SamplingParams for a request, as vLLM's own OpenAI server maps the same fields.

    Pure (no engine), so each OpenAI field's mapping is unit-tested. Unset fields keep
    vLLM's defaults, which are OpenAI's. Output is always DELTA: the LLM deployment streams.
    `n` is vLLM's parallel sampling (one parent request, `n` children sharing the prompt's
    KV cache; with a `seed`, child i uses seed + i so the choices differ).
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    params: dict[str, Any] = {"max_tokens": max_tokens, "output_kind": RequestOutputKind.DELTA, "n": request.n}
    for name in ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
                 "repetition_penalty", "top_k", "min_p", "logit_bias", "logprobs"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    if request.json_schema is not None:
        params["structured_outputs"] = StructuredOutputsParams(json=request.json_schema)
    elif request.json_object:
        params["structured_outputs"] = StructuredOutputsParams(json_object=True)
    return SamplingParams(**params)


def token_logprobs(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Logprob] | None], top: int,
    decode: Callable[[int], str],
) -> list[TokenLogprob]:
    """The chosen token and its `top` alternatives at each position, from vLLM's per-position
    `{token_id: Logprob}` (the chosen token plus the top-k, in no useful order)."""
    out: list[TokenLogprob] = []
    for token_id, position in zip(token_ids, positions, strict=False):
        entries = dict(position or {})
        chosen = entries.get(token_id)
        best = sorted(entries.items(), key=lambda item: -item[1].logprob)[:top]
        out.append(TokenLogprob(
            token=_text(token_id, chosen, decode),
            logprob=max(chosen.logprob, -9999.0) if chosen is not None else -9999.0,
            top=[TopLogprob(_text(i, lp, decode), max(lp.logprob, -9999.0)) for i, lp in best],
        ))
    return out


def _text(token_id: int, logprob: Logprob | None, decode: Callable[[int], str]) -> str:
    if logprob is not None and logprob.decoded_token is not None:
        return logprob.decoded_token
    return decode(token_id)
