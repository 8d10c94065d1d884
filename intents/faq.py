"""FAQ topics found by similarity to their example questions (tf-idf over characters and tokens)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

# Below this cosine similarity no topic is close enough: the fallback answers.
MIN_SIMILARITY = 0.34
# ... and must share this many words or character pairs with the example.
MIN_SHARED_TERMS = 3


class _Parsed(Protocol):
    norm: str
    tokens: list[str]


def _terms(norm: str, tokens: list[str]) -> set[str]:
    text = "".join(c for c in norm if c.isalnum())
    grams = {text[i:i + 2] for i in range(len(text) - 1)}
    grams |= {f"w:{t}" for t in tokens if len(t) > 1 and t.strip()}
    return grams or set(text)


class FaqIndex:
    """Each topic's example questions as tf-idf vectors; a query goes to its nearest example."""

    def __init__(self, topics: Sequence[tuple[str, Sequence[_Parsed]]], background: Sequence[_Parsed] = ()) -> None:
        """`background`: other customer messages, so words every customer writes ("我想", "一下") weigh little."""
        docs = [(name, _terms(q.norm, q.tokens)) for name, questions in topics for q in questions]
        docs = [(name, terms) for name, terms in docs if terms]
        frequency: dict[str, int] = {}
        for terms in [t for _, t in docs] + [_terms(b.norm, b.tokens) for b in background]:
            for term in terms:
                frequency[term] = frequency.get(term, 0) + 1
        total = len(docs) + len(background) or 1
        self._idf = {t: math.log((1 + total) / (1 + n)) + 1 for t, n in frequency.items()}
        self._postings: dict[str, list[tuple[int, float]]] = {}
        self._names: list[str] = []
        for i, (name, terms) in enumerate(docs):
            norm = math.sqrt(sum(self._idf[t] ** 2 for t in terms))
            self._names.append(name)
            for term in terms:
                self._postings.setdefault(term, []).append((i, self._idf[term] / norm))

    def scores(self, norm: str, tokens: list[str]) -> list[tuple[str, float]]:
        """(topic, similarity) of the best example of each topic, best first."""
        idf, postings = self._idf, self._postings
        terms = [t for t in _terms(norm, tokens) if t in idf]
        if not terms:
            return []
        qnorm = math.sqrt(sum(idf[t] ** 2 for t in terms)) or 1.0
        sums: dict[int, float] = {}
        hits: dict[int, int] = {}
        for term in terms:
            if term not in postings:
                continue
            weight = idf[term] / qnorm
            for doc, value in postings[term]:
                sums[doc] = sums.get(doc, 0.0) + weight * value
                hits[doc] = hits.get(doc, 0) + 1
        best: dict[str, float] = {}
        for doc, score in sums.items():
            if hits[doc] < MIN_SHARED_TERMS:  # one shared word ("沙发") says nothing about the topic
                continue
            name = self._names[doc]
            best[name] = max(best.get(name, 0.0), score)
        return sorted(best.items(), key=lambda p: -p[1])

    def best(self, norm: str, tokens: list[str]) -> str | None:
        """The closest topic, or None when none is similar enough."""
        ranked = self.scores(norm, tokens)
        return ranked[0][0] if ranked and ranked[0][1] >= MIN_SIMILARITY else None
