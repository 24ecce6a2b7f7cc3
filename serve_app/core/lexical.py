"""An incremental BM25 index for one user's memories.

Dense MiniLM vectors miss exact names, numbers and rare words that questions hinge on;
BM25 catches those. Libraries such as bm25s index a static corpus; a user's memories
change one change-log entry at a time, so this keeps postings that update in
O(len(text)) per add/remove instead of re-indexing.

Words are Snowball-stemmed ("paintings" meets "painted"), and a search may expand its
query with RM3 pseudo-relevance feedback: a question rarely uses the words of the turn
that answers it, but its best hits share that turn's topic words ("pottery class" finds
"the ceramics studio downtown" through the hits that say "studio").
"""

from __future__ import annotations

import functools
import heapq
import math
import re
import threading
from collections import Counter, defaultdict

import numpy as np
import snowballstemmer

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "do", "does", "for",
    "from", "had", "has", "have", "he", "her", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "just", "me", "my", "of", "on", "or", "our", "she", "so", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "too", "up", "us", "was", "we", "were", "what", "when", "where", "which",
    "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "about", "after", "before", "did", "does",
    "doing", "am", "any", "all", "some", "such", "only", "own", "same", "very", "s", "t", "don", "should", "now",
])


# RM3 pseudo-relevance feedback, Anserini's defaults (fbDocs 10, fbTerms 10, original query
# weight 0.5, terms in more than 10% of documents skipped).
RM3_DOCS = 10
RM3_TERMS = 10
RM3_QUERY_WEIGHT = 0.5
RM3_MAX_DF = 0.1


_STEMMER = snowballstemmer.stemmer("english")
_STEM_LOCK = threading.Lock()  # a Snowball stemmer keeps state between calls


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """The Snowball (Porter 2) English stem, so 'paintings' meets 'painting' and 'painted'."""
    with _STEM_LOCK:
        return str(_STEMMER.stemWord(word))


def query_weights(query: str) -> dict[str, float]:
    """Each distinct term of the query once, at weight 1 (a repeated word is not a stronger ask)."""
    return dict.fromkeys(tokenize(query), 1.0)


def tokenize(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25Index:
    """Okapi BM25 over documents keyed by int. Each document has a row; each term's
    postings are rows and term frequencies, turned into numpy arrays when a search first
    needs them after a change. A search then scores a term's whole posting list in one
    vectorised step: at 10,000 memories a query touches thousands of postings (a speaker's
    name is in half of them), which a per-posting Python loop scores ~10x slower."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._rows: dict[int, int] = {}  # key -> row
        self._keys = np.zeros(0, dtype=np.int64)  # row -> key
        self._lengths = np.zeros(0, dtype=np.float64)  # row -> document length in terms
        self._terms: dict[int, Counter[str]] = {}  # row -> its terms, to remove them again
        self._free: list[int] = []  # rows of removed documents, reused first
        self._postings: defaultdict[str, dict[int, int]] = defaultdict(dict)  # term -> {row: tf}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # term -> (rows, tf), built on demand
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._rows)

    def upsert(self, key: int, text: str) -> None:
        self.remove(key)
        terms = Counter(tokenize(text))
        row = self._new_row(key)
        self._terms[row] = terms
        self._lengths[row] = sum(terms.values())
        self._total_length += int(self._lengths[row])
        for term, tf in terms.items():
            self._postings[term][row] = tf
            self._arrays.pop(term, None)

    def remove(self, key: int) -> None:
        row = self._rows.pop(key, None)
        if row is None:
            return
        self._total_length -= int(self._lengths[row])
        self._lengths[row] = 0
        for term in self._terms.pop(row):
            posting = self._postings[term]
            del posting[row]
            self._arrays.pop(term, None)
            if not posting:
                del self._postings[term]
        self._free.append(row)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """BM25 top k of the query's terms."""
        return self._search(query_weights(query), k)

    def feedback_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """BM25 top k of the query expanded by RM3 from its own best hits (see `expand`).
        Over a few documents it can rank one that restates the query below one that shares
        its topic (the expansion's "rare" terms are then other documents' own words), which
        is why memory search leaves it off by default."""
        weights = query_weights(query)
        first = self._search(weights, min(k, RM3_DOCS))
        if not first:
            return []
        return self._search(self.expand(weights, first), k)

    def expand(self, weights: dict[str, float], feedback: list[tuple[int, float]]) -> dict[str, float]:
        """RM3 (Lavrenko & Croft's relevance model mixed with the query, as Anserini runs it):
        the relevance model's top RM3_TERMS terms, renormalised, mixed with the L1-normalised
        query at RM3_QUERY_WEIGHT."""
        top = heapq.nlargest(RM3_TERMS, self._relevance_model(feedback).items(), key=lambda item: item[1])
        total = sum(w for _, w in top) or 1.0
        q_total = sum(weights.values()) or 1.0
        mixed = {t: RM3_QUERY_WEIGHT * w / q_total for t, w in weights.items()}
        for term, w in top:
            mixed[term] = mixed.get(term, 0.0) + (1 - RM3_QUERY_WEIGHT) * w / total
        return mixed

    def _relevance_model(self, feedback: list[tuple[int, float]]) -> dict[str, float]:
        """P(w|R) up to a constant: the sum over the feedback documents of score(d) x tf(w, d) / |d|,
        over terms in at most RM3_MAX_DF of the documents (a speaker's name in every turn
        says nothing about this question)."""
        n = len(self._rows)
        model: defaultdict[str, float] = defaultdict(float)
        for key, score in feedback:
            row = self._rows[key]
            length = float(self._lengths[row]) or 1.0
            for term, tf in self._terms[row].items():
                if len(self._postings[term]) <= RM3_MAX_DF * n:
                    model[term] += score * tf / length
        return model

    def _search(self, weights: dict[str, float], k: int) -> list[tuple[int, float]]:
        n = len(self._rows)
        if n == 0:
            return []
        avg_len = self._total_length / n or 1.0
        scores = np.zeros(len(self._keys), dtype=np.float64)
        for term, weight in weights.items():
            if term not in self._postings:
                continue
            rows, tf = self._posting(term)
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = tf + self.k1 * (1 - self.b + self.b * self._lengths[rows] / avg_len)
            scores[rows] += weight * idf * tf * (self.k1 + 1) / norm
        found = np.flatnonzero(scores)
        if len(found) > k:
            found = found[np.argpartition(-scores[found], k - 1)[:k]]
        best = found[np.argsort(-scores[found], kind="stable")]
        return [(int(self._keys[row]), float(scores[row])) for row in best]

    def _posting(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        arrays = self._arrays.get(term)
        if arrays is None:
            posting = self._postings[term]
            arrays = (np.fromiter(posting.keys(), dtype=np.int64, count=len(posting)),
                      np.fromiter(posting.values(), dtype=np.float64, count=len(posting)))
            self._arrays[term] = arrays
        return arrays

    def _new_row(self, key: int) -> int:
        if self._free:
            row = self._free.pop()
        else:
            row = len(self._rows)
            if row >= len(self._keys):  # grow by doubling: amortised O(1) per document
                size = max(16, 2 * len(self._keys))
                self._keys = np.resize(self._keys, size)
                self._lengths = np.concatenate([self._lengths, np.zeros(size - len(self._lengths), np.float64)])
        self._rows[key] = row
        self._keys[row] = key
        return row
