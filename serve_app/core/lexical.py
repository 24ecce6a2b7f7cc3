"""An incremental BM25 index for one user's memories.

Dense MiniLM vectors miss exact names, numbers and rare words that questions hinge on;
BM25 catches those. Libraries such as bm25s index a static corpus; a user's memories
change one change-log entry at a time, so this keeps postings that update in
O(len(text)) per add/remove instead of re-indexing.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

_WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "do", "does", "for",
    "from", "had", "has", "have", "he", "her", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "just", "me", "my", "of", "on", "or", "our", "she", "so", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "too", "up", "us", "was", "we", "were", "what", "when", "where", "which",
    "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "about", "after", "before", "did", "does",
    "doing", "am", "any", "all", "some", "such", "only", "own", "same", "very", "s", "t", "don", "should", "now",
])


def _stem(word: str) -> str:
    """Light suffix stripping so 'paintings' meets 'painting' and 'painted'."""
    for suffix in ("ings", "ing", "ies", "ied", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
    return word


def tokenize(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


class BM25Index:
    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._docs: dict[int, Counter[str]] = {}
        self._lengths: dict[int, int] = {}
        self._postings: defaultdict[str, set[int]] = defaultdict(set)
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._docs)

    def upsert(self, key: int, text: str) -> None:
        self.remove(key)
        terms = Counter(tokenize(text))
        self._docs[key] = terms
        self._lengths[key] = sum(terms.values())
        self._total_length += self._lengths[key]
        for term in terms:
            self._postings[term].add(key)

    def remove(self, key: int) -> None:
        terms = self._docs.pop(key, None)
        if terms is None:
            return
        self._total_length -= self._lengths.pop(key)
        for term in terms:
            posting = self._postings[term]
            posting.discard(key)
            if not posting:
                del self._postings[term]

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        n = len(self._docs)
        if n == 0:
            return []
        avg_len = self._total_length / n or 1.0
        scores: defaultdict[int, float] = defaultdict(float)
        for term in set(tokenize(query)):
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            for key in posting:
                tf = self._docs[key][term]
                norm = tf + self.k1 * (1 - self.b + self.b * self._lengths[key] / avg_len)
                scores[key] += idf * tf * (self.k1 + 1) / norm
        return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:k]
