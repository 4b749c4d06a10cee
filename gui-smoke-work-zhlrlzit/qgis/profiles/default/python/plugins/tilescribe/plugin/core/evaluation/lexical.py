"""Lexical scoring for evaluation: a small numpy BM25 and reciprocal rank fusion with dense scores."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..search.lexical import rrf
from .metrics import TIE_TOLERANCE

_WORD = re.compile(r"[a-z0-9]+")
_QUERY_CHUNK = 1024  # queries scored per matrix product, to bound memory


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BM25:
    """Okapi BM25 over a fixed set of documents (k1=1.2, b=0.75, Lucene's positive idf)."""

    def __init__(self, documents: Sequence[str], k1: float = 1.2, b: float = 0.75):
        tokens = [tokenize(document) for document in documents]
        self.vocabulary = {word: n for n, word in enumerate(sorted({w for doc in tokens for w in doc}))}
        counts = np.zeros((len(documents), len(self.vocabulary)), dtype=np.float64)
        for row, words in enumerate(tokens):
            np.add.at(counts[row], [self.vocabulary[w] for w in words], 1.0)
        lengths = counts.sum(axis=1, keepdims=True)
        norm = k1 * (1.0 - b + b * lengths / max(float(lengths.mean()), 1e-9))
        with_term = (counts > 0).sum(axis=0)
        idf = np.log(1.0 + (len(documents) - with_term + 0.5) / (with_term + 0.5))
        # Term weights per document, so scoring a batch of queries is one matrix product.
        self._weights = (idf * counts * (k1 + 1.0) / (counts + norm)).T.copy()

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 of every query (rows) against every document (columns)."""
        out = np.zeros((len(queries), self._weights.shape[1]), dtype=np.float64)
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = queries[start:start + _QUERY_CHUNK]
            term_counts = np.zeros((len(chunk), self._weights.shape[0]), dtype=np.float64)
            for row, text in enumerate(chunk):
                known = [self.vocabulary[w] for w in tokenize(text) if w in self.vocabulary]
                np.add.at(term_counts[row], known, 1.0)
            out[start:start + len(chunk)] = term_counts @ self._weights
        return out


def competition_ranks(scores: np.ndarray, tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Per row, 1 + number of items scoring more: tied items share the better rank."""
    scores = np.asarray(scores)
    order = np.argsort(-scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    starts_group = np.ones(ordered.shape, dtype=bool)
    starts_group[:, 1:] = ordered[:, :-1] - ordered[:, 1:] > tolerance
    positions = np.where(starts_group, np.arange(ordered.shape[1]), 0)
    group_rank = np.maximum.accumulate(positions, axis=1) + 1
    ranks = np.empty_like(group_rank)
    np.put_along_axis(ranks, order, group_rank, axis=1)
    return ranks


def reciprocal_rank_fusion(*score_matrices: np.ndarray) -> np.ndarray:
    """Search's fusion (core/search/lexical.py) over whole score matrices; ties keep equal fused scores."""
    fused = np.zeros(np.shape(score_matrices[0]), dtype=np.float64)
    for scores in score_matrices:
        fused += rrf(competition_ranks(scores))
    return fused
