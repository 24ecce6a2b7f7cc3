"""Prompt assembly and the token budget of what memserve adds to a prompt."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from serve_app import models
from serve_app.core.budget import Trimmed, fit, shed
from serve_app.core.prompt import PromptContext, build_messages, completion_prompt
from serve_app.engine import PromptRenderer
from serve_app.generation import GenerationRequest


def test_memories_and_caller_system_merge_into_one_system_turn() -> None:
    out = build_messages(
        "Be brief.",
        [{"role": "system", "content": "Speak French."}, {"role": "user", "content": "Hi"}],
        PromptContext(memories=("Likes tea", "Lives in Lyon")),
    )
    assert [m["role"] for m in out] == ["system", "user"]
    system = out[0]["content"]
    assert system.startswith("Be brief.") and "Speak French." in system
    assert "- Likes tea\n- Lives in Lyon" in system


def test_no_memories_no_memory_block() -> None:
    out = build_messages("", [{"role": "user", "content": "Hi"}])
    assert out == [{"role": "user", "content": "Hi"}]


def test_knowledge_is_numbered_and_completions_get_notes_in_front() -> None:
    class Source:
        filename, page, text = "guide.pdf", 3, "Falcons dive at 300 km/h."

    context = PromptContext.of(["Likes falcons"], [Source()], [])
    assert context.knowledge == ("(guide.pdf, page 3) Falcons dive at 300 km/h.",)
    prompt = completion_prompt("How fast?", context)
    assert prompt.startswith("Relevant notes:\n- Likes falcons")
    assert "[1] (guide.pdf, page 3)" in prompt and prompt.endswith("How fast?")


def words(context: PromptContext) -> list[str]:
    return completion_prompt("question", context).split()


def test_shed_drops_products_then_knowledge_then_the_lowest_memories() -> None:
    context = PromptContext(memories=("m1 m1", "m2 m2"), knowledge=("k1 k1",), products=("p1 p1", "p2 p2"))
    kept, trimmed = shed(context, 5, lambda line: len(line.split()))
    assert trimmed == Trimmed(memories=0, knowledge=1, products=2)
    assert kept.memories == ("m1 m1", "m2 m2") and kept.knowledge == () and kept.products == ()
    kept, trimmed = shed(context, 7, lambda line: len(line.split()))
    assert kept.memories == ("m1 m1",) and trimmed.memories == 1


def test_fit_keeps_what_fits_and_never_cuts_the_question() -> None:
    context = PromptContext(memories=tuple(f"memory {i} " + "word " * 20 for i in range(10)))
    tokens, kept, trimmed = fit(context, words, 100, lambda line: len(line.split()) + 1)
    assert len(tokens) <= 100 and tokens[-1] == "question"
    assert 0 < len(kept.memories) < 10 and trimmed.memories == 10 - len(kept.memories)
    assert kept.memories == context.memories[: len(kept.memories)]  # the best ranked stay
    tokens, kept, trimmed = fit(context, words, 5, lambda line: len(line.split()))
    assert kept.empty and tokens == ["question"] and trimmed.memories == 10  # the question alone, as is
    assert not fit(context, words, 10_000, len)[2]  # everything fits: nothing trimmed


@cache
def smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(models.resolve("bundled:smollm2-135m-instruct"))


@pytest.mark.parametrize("chat", [True, False])
def test_renderer_fits_long_memories_into_the_real_models_window(chat: bool) -> None:
    """With the bundled model's own tokenizer and chat template: 40 long memories would
    need ~4,000 tokens of a 2,048-token window; the prompt fits, the question is whole."""
    renderer = PromptRenderer(smollm2_tokenizer(), max_model_len=2048, default_max_tokens=256)
    memories = tuple(f"Memory {i}: " + "the user once told a long story about their garden " * 8 for i in range(40))
    question = "What is my favourite colour? Answer in one word."
    request = GenerationRequest(
        request_id="r", system_prompt="Be brief.", context=PromptContext(memories=memories), max_tokens=64,
        messages=[{"role": "user", "content": question}] if chat else None, prompt=None if chat else question,
    )
    tokens, trimmed = renderer.render(request)
    assert trimmed is not None and 0 < trimmed.memories < 40
    assert 2048 - 64 - 60 < len(tokens) <= 2048 - 64  # full, but within the window
    text = smollm2_tokenizer().decode(tokens)
    assert question in text and "Memory 0:" in text and "Memory 39:" not in text
    small = GenerationRequest(request_id="s", messages=[{"role": "user", "content": question}],
                              context=PromptContext(memories=memories[:2]), max_tokens=64)
    assert renderer.render(small)[1] is None  # fits: nothing trimmed, nothing said
