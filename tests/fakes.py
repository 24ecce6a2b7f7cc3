"""The deployment graph in one process, for unit tests of the request logic.

Each deployment is stood in for by the object it hosts (a real `ShardSearcher` over a
real SQLite store, a real `InProcessCache`, a real `Consolidation`) or, for the two
models, a fake with the same methods: the embedding is a deterministic bag-of-words hash
so related texts are similar; the "LLM" echoes the prompt's memory lines so tests can see
what reached the prompt. The clients reach them through `LocalEndpoint`s, exactly as
they reach Ray handles through `HandleEndpoint`s.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from serve_app.clients import Clients, LocalEndpoint
from serve_app.core.budget import fit
from serve_app.core.prompt import PromptContext, build_messages, completion_prompt
from serve_app.core.response_cache import InProcessCache
from serve_app.core.retrieval import SearchHit, ShardQuery
from serve_app.core.sqlite_store import SQLiteMemoryStore
from serve_app.generation import (
    GenerationChunk,
    GenerationRequest,
    InvalidGenerationRequest,
    PromptTooLongError,
    TokenLogprob,
    TopLogprob,
)
from serve_app.maintenance import Consolidation, TierMaintainer
from serve_app.settings import CacheSettings, MemorySettings
from serve_app.shard_search import ShardSearcher

DIM = 64
FAKE_VOCAB = 50_000


def bag_of_words(text: str) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for word in re.findall(r"[a-z]+", text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    n = np.linalg.norm(v)
    return v / n if n else v


class FakeEmbedder:
    """Stands in for `deployments.embedder.Embedder`."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.namespaces: set[str | None] = set()  # the tenants' cache namespaces it was called with

    async def embed(self, texts: list[str], namespace: str | None = None) -> np.ndarray:
        self.namespaces.add(namespace)
        await asyncio.sleep(self.delay_s)
        return np.stack([bag_of_words(t) for t in texts])

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(t.split()) for t in texts)

    def stats(self) -> dict[str, int]:
        return {"hits": 0, "misses": 0, "entries": 0}


class FakeLLM:
    """Stands in for `deployments.llm.LLM`: echoes the memory lines of the prompt, once per
    choice (`n`, interleaved as the engine interleaves them), with made-up logprobs when asked."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.generations = 0
        self.last_request: GenerationRequest | None = None
        self.context_words = 100_000  # the fake's window, in whitespace-separated "tokens"
        self.last_prompt = ""
        # Scripted answers to structured-output requests (extraction), in order: a text is
        # the answer, an exception is raised instead; requests that had one are kept.
        self.json_answers: list[str | Exception] = []
        self.json_requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.generations += 1
        self.last_request = request
        if request.max_tokens and request.max_tokens > 1000:
            raise PromptTooLongError("too long")
        if request.logit_bias and max(request.logit_bias) >= FAKE_VOCAB:  # as vLLM checks the vocabulary
            raise InvalidGenerationRequest(f"token ids must be below {FAKE_VOCAB}", "logit_bias")
        await asyncio.sleep(self.delay_s)
        if request.json_schema is not None and self.json_answers:
            self.json_requests.append(request)
            answer = self.json_answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            yield GenerationChunk(text=answer, finish_reason="stop", prompt_tokens=7, completion_tokens=1)
            return
        budget = self.context_words - (request.max_tokens or 16)
        _, context, trimmed = fit(request.context, lambda c: self.render(request, c).split(), budget,
                                      lambda line: len(line.split()) + 1)
        self.last_prompt = self.render(request, context)
        system = self.last_prompt.split("\n\n\n")[0]
        echoed = ["echo:"] + [line for line in system.splitlines() if line.startswith("- ")]
        for i, word in enumerate(echoed):
            last = i == len(echoed) - 1
            text = word + ("" if last else " ")
            for index in range(request.n):
                yield GenerationChunk(
                    text=text, finish_reason="stop" if last else None, prompt_tokens=7,
                    completion_tokens=i + 1, index=index, logprobs=fake_logprobs(text, request.logprobs),
                    trimmed=(trimmed or None) if i == 0 and index == 0 else None,
                )

    @staticmethod
    def render(request: GenerationRequest, context: PromptContext) -> str:
        """The prompt as text: the system turn (or the completion's notes) first."""
        if request.messages is None:
            return completion_prompt(request.prompt or "", context)
        return "\n\n\n".join(m["content"] for m in build_messages(request.system_prompt, request.messages, context))


def fake_logprobs(text: str, top: int | None) -> list[TokenLogprob] | None:
    """One token per chunk; alternatives are the token with a growing suffix."""
    if top is None:
        return None
    alternatives = [TopLogprob(text + "~" * k, -0.25 * (k + 1)) for k in range(top)]
    return [TokenLogprob(token=text, logprob=-0.25, top=alternatives)]


class FlakySearcher(ShardSearcher):
    """A real shard that can be told to fail, for degradation tests."""

    fail = False

    async def search(self, query: ShardQuery) -> list[SearchHit]:
        if self.fail:
            raise RuntimeError("shard down")
        return await super().search(query)


class FakeGraph:
    def __init__(self, store_path: Path, num_shards: int = 2) -> None:
        self.store = SQLiteMemoryStore(store_path)
        self.shards = [FlakySearcher(self.store, i, DIM, 10) for i in range(num_shards)]
        self.embedder = FakeEmbedder()
        self.llm = FakeLLM()
        self.cache = InProcessCache(100, 60)
        memory = MemorySettings()
        self.maintainer = TierMaintainer(self.store, memory.tier_registry(), memory.consolidation, num_shards)
        self.consolidation = Consolidation(self.maintainer)

    def fail_search(self, failing: bool = True) -> None:
        for shard in self.shards:
            shard.fail = failing

    def clients(self, cache: CacheSettings | None = None) -> Clients:
        return Clients.over(
            embedder=LocalEndpoint(self.embedder), shards=[LocalEndpoint(s) for s in self.shards],
            llm=LocalEndpoint(self.llm), cache=LocalEndpoint(self.cache),
            consolidator=LocalEndpoint(self.consolidation), cache_settings=cache or CacheSettings(local_ttl_s=0),
        )
