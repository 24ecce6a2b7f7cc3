from __future__ import annotations

import itertools

import pytest

from serve_app.core.chunking import chunk_text

SENTENCES = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))


def test_chunks_respect_size_and_cover_everything() -> None:
    chunks = list(chunk_text(SENTENCES, size=500, overlap=50))
    assert all(len(c.text) <= 500 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(SENTENCES)
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # consecutive chunks overlap: nothing falls between
        assert before.end - after.start <= 50 + 1


def test_chunks_end_on_sentence_boundaries_when_near() -> None:
    chunks = list(chunk_text(SENTENCES, size=500, overlap=50))
    assert all(c.text.endswith(".") for c in chunks)


def test_paragraph_breaks_win() -> None:
    text = "A" * 300 + ".\n\n" + "B " * 200
    first = next(chunk_text(text, size=400, overlap=0))
    assert first.text == "A" * 300 + "."


def test_text_without_boundaries_is_cut_at_the_limit() -> None:
    chunks = list(chunk_text("x" * 1200, size=500, overlap=50))
    assert [len(c.text) for c in chunks] == [500, 500, 300]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        list(chunk_text("abc", size=10, overlap=10))
