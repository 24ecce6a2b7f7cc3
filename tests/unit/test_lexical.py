from __future__ import annotations

from serve_app.core.lexical import BM25Index, tokenize


def test_tokenize_drops_stopwords_and_light_stems() -> None:
    assert tokenize("The paintings she painted") == ["paint", "paint"]
    assert tokenize("Caroline's 3 puppies") == ["caroline", "3", "puppy"]


def test_rare_terms_outrank_common_ones_and_updates_apply() -> None:
    index = BM25Index()
    index.upsert(1, "went to the park with the dog")
    index.upsert(2, "went to the park again")
    index.upsert(3, "adopted a dog named Oscar")
    assert [k for k, _ in index.search("Oscar", 5)] == [3]
    assert index.search("park dog", 5)[0][0] == 1
    index.upsert(3, "adopted a cat named Luna")  # an update replaces the old text
    assert index.search("Oscar", 5) == [] and index.search("Luna", 5)[0][0] == 3
    index.remove(1)
    assert [k for k, _ in index.search("dog", 5)] == []
    assert len(index) == 2
