"""ChatPipeline over fake services: memories in the prompt, cache, degradation, write-back."""

from __future__ import annotations

from serve_app.chat.pipeline import ChatPipeline
from serve_app.generation import GenerationResult
from serve_app.memory_service import MemoryService
from serve_app.protocol import ChatCompletionRequest, MemoryIn
from serve_app.settings import AppSettings
from tests.fakes import FakeGraph


def chat(text: str, user: str | None = "alice", **extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": text}], user=user, **extra)


async def answer(pipeline: ChatPipeline, request: ChatCompletionRequest) -> tuple[GenerationResult, object]:
    prepared = await pipeline.prepare_chat(request)
    result = GenerationResult.collect([c async for c in pipeline.stream(prepared)])
    await pipeline.drain()
    return result, prepared.info


async def test_user_memories_reach_the_prompt_and_response(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    await memory.add("alice", [MemoryIn(text="my cat is called Miso")])
    await memory.add("bob", [MemoryIn(text="my cat is called Tiger")])
    result, info = await answer(pipeline, chat("what is my cat called?"))
    assert "Miso" in result.text and "Tiger" not in result.text
    assert [m.text for m in info.memories] == ["my cat is called Miso"]
    assert set(info.timings_ms) >= {"embed", "memory_search", "ttft", "total"}


async def test_turn_is_written_back_after_the_answer(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    await answer(pipeline, chat("I just moved to Lisbon"))
    records = graph.store.list("alice", None, 10, None)
    assert [(r.text, r.tier) for r in records] == [("I just moved to Lisbon", "short_term")]
    await answer(pipeline, chat("secret", memserve={"write_back": False}))
    assert len(graph.store.list("alice", None, 10, None)) == 1


async def test_second_identical_request_is_served_from_cache(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    request = chat("hello there", user=None)
    first, info1 = await answer(pipeline, request)
    second, info2 = await answer(pipeline, request)
    assert graph.llm.generations == 1
    assert not info1.cached and info2.cached
    assert second.text == first.text and second.completion_tokens == first.completion_tokens


async def test_cache_misses_after_memory_changes(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    request = chat("what do I like?", memserve={"write_back": False})
    await answer(pipeline, request)
    await memory.add("alice", [MemoryIn(text="I like jazz")])
    result, info = await answer(pipeline, request)
    assert not info.cached and graph.llm.generations == 2
    assert "jazz" in result.text


async def test_slow_embedding_degrades_instead_of_failing(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    await memory.add("alice", [MemoryIn(text="my cat is called Miso")])
    settings.server.embed_timeout_s = 0.05
    graph.embedder.delay_s = 0.5
    result, info = await answer(pipeline, chat("what is my cat called?"))
    assert "embed" in info.degraded and info.memories == []
    assert result.text.startswith("echo:")


async def test_failed_search_degrades(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    graph.fail_search()
    result, info = await answer(pipeline, chat("anything"))
    assert info.degraded == ["memory_search"] and result.finish_reason == "stop"


async def test_memory_off_skips_embedding_and_search(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    await memory.add("alice", [MemoryIn(text="my cat is called Miso")])
    _, info = await answer(pipeline, chat("cat?", memserve={"memory": False, "products": False}))
    assert info.memories == [] and "embed" not in info.timings_ms
    assert graph.store.list("alice", None, 10, None)[-1].text == "my cat is called Miso"  # no write-back


async def test_cache_can_be_bypassed_per_request(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    request = chat("hello there", user=None, memserve={"cache": False})
    await answer(pipeline, request)
    _, info = await answer(pipeline, request)
    assert not info.cached and graph.llm.generations == 2


async def test_a_chat_naming_a_time_prefers_memories_of_that_time(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    await memory.add("alice", [MemoryIn(text="I went hiking in the hills", occurred_at="2024-02-03T10:00:00"),
                               MemoryIn(text="I went hiking by the lake", occurred_at="2023-05-10T10:00:00")])
    ask = {"write_back": False, "k": 1, "cache": False}
    _, plain = await answer(pipeline, chat("where did I go hiking in the hills or by the lake?", memserve=ask))
    _, in_may = await answer(pipeline, chat("where did I go hiking in May 2023?", memserve=ask))
    _, in_feb = await answer(pipeline, chat("where did I go hiking in February 2024?", memserve=ask))
    assert len(plain.memories) == 1
    assert [m.text for m in in_may.memories] == ["I went hiking by the lake"]
    assert [m.text for m in in_feb.memories] == ["I went hiking in the hills"]


async def test_include_connections_puts_the_turns_around_a_memory_in_the_prompt(
    settings: AppSettings, graph: FakeGraph, memory: MemoryService, pipeline: ChatPipeline
) -> None:
    turns = ["Sam: shall we book the ferry to Skye?", "alice: yes, the one at nine", "Sam: done, see you at the pier"]
    await memory.add("alice", [MemoryIn(text=t, session="trip") for t in turns])
    ask = {"write_back": False, "k": 1}
    result, alone = await answer(pipeline, chat("ferry to Skye", memserve=ask))
    result, connected = await answer(pipeline, chat("ferry to Skye", memserve={**ask, "include_connections": True}))
    assert [m.text for m in alone.memories] == [turns[0]]
    assert connected.memories[0].text == turns[0]
    assert turns[1] in [m.text for m in connected.memories]
    assert turns[1] in result.text  # in the prompt, not only in the report
    assert graph.llm.generations == 2  # the two requests do not share a cached answer
