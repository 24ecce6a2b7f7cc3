from __future__ import annotations

import math
import random

from serve_app.core.lexical import BM25Index, tokenize


def test_tokenize_drops_stopwords_and_stems() -> None:
    assert tokenize("The paintings she painted") == ["paint", "paint"]
    assert tokenize("Caroline's 3 puppies") == tokenize("caroline 3 puppy") == ["carolin", "3", "puppi"]
    assert tokenize("running runs") == ["run", "run"]


def session(index: BM25Index) -> None:
    """Fifty turns of two speakers; turns 1-3 are one talk about a pottery class."""
    fillers = ["the weather was nice", "work was busy", "we watched a film", "dinner with friends", "a long walk"]
    for key in range(4, 54):
        index.upsert(key, f"{'Caroline' if key % 2 else 'Melanie'}: {fillers[key % len(fillers)]} today {key}")
    index.upsert(1, "Caroline: I signed up for a pottery class at the studio downtown")
    index.upsert(2, "Melanie: pottery sounds fun, which studio?")
    index.upsert(3, "Caroline: the ceramics studio downtown, my first bowl is drying")


def test_feedback_finds_a_turn_that_shares_the_topic_but_not_the_query_words() -> None:
    index = BM25Index()
    session(index)
    plain = [key for key, _ in index.search("pottery class", 5)]
    expanded = [key for key, _ in index.feedback_search("pottery class", 5)]
    assert 3 not in plain  # no query word in it
    assert 3 in expanded and expanded[0] == 1  # "studio" and "downtown" came from the best hits
    assert set(plain) <= set(expanded)


def test_feedback_skips_terms_common_to_many_documents() -> None:
    index = BM25Index()
    session(index)
    weights = index.expand({"potteri": 1.0}, index.search("pottery", 10))
    assert "carolin" not in weights and "melani" not in weights  # a speaker is in half the turns
    assert weights["potteri"] > 0.5 and "studio" in weights
    assert abs(sum(weights.values()) - 1.0) < 1e-9  # the query and the relevance model, each half


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


def reference_bm25(docs: dict[int, str], query: str, k1: float = 1.2, b: float = 0.75) -> dict[int, float]:
    """Okapi BM25 written out term by term, document by document."""
    terms = {key: tokenize(text) for key, text in docs.items()}
    avg = sum(len(t) for t in terms.values()) / len(terms)
    scores: dict[int, float] = {}
    for term in set(tokenize(query)):
        having = [key for key, t in terms.items() if term in t]
        idf = math.log(1 + (len(terms) - len(having) + 0.5) / (len(having) + 0.5))
        for key in having:
            tf = terms[key].count(term)
            scores[key] = scores.get(key, 0.0) + idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(terms[key]) / avg))
    return scores


def test_scores_match_bm25_through_adds_updates_and_removes() -> None:
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "Caroline", "Melanie", "painted", "paintings",
             "dog", "7", "2023"]
    index, docs = BM25Index(), dict[int, str]()
    for step in range(600):
        key = rng.randrange(150)
        if rng.random() < 0.25:
            index.remove(key)
            docs.pop(key, None)
        else:
            docs[key] = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
            index.upsert(key, docs[key])
        if step % 50 == 49:
            query = " ".join(rng.sample(words, 3))
            expected = reference_bm25(docs, query)
            got = dict(index.search(query, len(docs)))
            assert got.keys() == {key for key, score in expected.items() if score > 0}
            assert all(abs(got[key] - expected[key]) < 1e-3 * max(1.0, expected[key]) for key in got)
            top = index.search(query, 5)
            assert [s for _, s in top] == sorted((s for _, s in top), reverse=True) and len(top) <= 5
    assert len(index) == len(docs)
