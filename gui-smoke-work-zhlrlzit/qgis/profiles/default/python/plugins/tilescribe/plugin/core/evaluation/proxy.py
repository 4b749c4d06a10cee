"""Oracle-caption proxy: human captions stand in for generated variants; the held-out one queries."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..embedding import Embedder
from .datasets import CaptionDataset
from .lexical import BM25, reciprocal_rank_fusion
from .metrics import TIE_TOLERANCE, EvaluationError, RetrievalRun, evaluate_scores

PROXY_LABEL = "proxy"
AGGREGATIONS = ("max", "mean", "concat")
# Fused scores are sums of 1/(k + rank) in float64: only exact ties are ties.
FUSED_TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class ProxySettings:
    """How the stand-in variants are scored: how many, how combined, with or without BM25."""

    variants: int = 4
    aggregation: str = "max"
    lexical: bool = False

    def describe(self, embedder_name: str) -> str:
        lexical = " +bm25" if self.lexical else ""
        return f"{embedder_name} {self.aggregation} v{self.variants}{lexical}"


class EmbeddingCache:
    """Embeds each distinct text once, however many settings or folds ask for it."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.name, self.dim = embedder.name, embedder.dim
        self.seconds = 0.0
        self._rows: dict[str, int] = {}
        self._vectors = np.zeros((0, embedder.dim), dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        new = [text for text in dict.fromkeys(texts) if text not in self._rows]
        if new:
            started = time.perf_counter()
            vectors = np.asarray(self.embedder.embed(new), dtype=np.float32)
            self.seconds += time.perf_counter() - started
            first = len(self._rows)
            self._rows.update((text, first + n) for n, text in enumerate(new))
            self._vectors = np.concatenate([self._vectors, vectors])
        return self._vectors[[self._rows[text] for text in texts]]


def fold_layout(dataset: CaptionDataset, variants: int, fold: int):
    """Fold `fold`: caption `fold` of each image is a query; the next `variants` captions
    (cyclically) are that image's variants. Returns (query rows, query texts, variant texts).

    Every image, not only the query's, leaves the fold's caption out, so all images have
    the same number of variants, as generated ones would. Taking the *next* captions
    (not the first ones) is what reproduces data/README.md's one-variant numbers.
    """
    rows, texts, variant_texts = [], [], []
    for row, item in enumerate(dataset.items):
        count = len(item.captions)
        if fold < count:
            rows.append(row)
            texts.append(item.captions[fold])
        variant_texts.append([item.captions[(fold + 1 + n) % count] for n in range(variants)])
    return rows, texts, variant_texts


def proxy_scores(dataset: CaptionDataset, cache: EmbeddingCache, settings: ProxySettings) -> np.ndarray:
    """Score matrix (one row per caption of the dataset, in `dataset.queries()` order) x images."""
    check_settings(dataset, settings)
    counts = np.array([len(item.captions) for item in dataset.items])
    first_row = np.cumsum(counts) - counts  # row of each image's caption 0
    dtype = np.float64 if settings.lexical else np.float32
    scores = np.empty((int(counts.sum()), len(dataset)), dtype=dtype)
    for fold in range(int(counts.max())):
        rows, texts, variant_texts = fold_layout(dataset, settings.variants, fold)
        fold_scores = dense_scores(cache, texts, variant_texts, settings.aggregation)
        if settings.lexical:
            documents = [" ".join(variants) for variants in variant_texts]
            fold_scores = reciprocal_rank_fusion(fold_scores, BM25(documents).scores(texts))
        scores[first_row[rows] + fold] = fold_scores
    return scores


def dense_scores(
    cache: EmbeddingCache, queries: Sequence[str], variant_texts: list[list[str]], aggregation: str
) -> np.ndarray:
    """Cosine of each query with each image, aggregated over the image's variants."""
    query_vectors = cache.embed(queries)
    if aggregation == "concat":
        # One embedding per image of all its variants joined, instead of one per variant.
        return query_vectors @ cache.embed([" ".join(v) for v in variant_texts]).T
    n_images, variants = len(variant_texts), len(variant_texts[0])
    flat = cache.embed([text for texts in variant_texts for text in texts])
    per_variant = (query_vectors @ flat.T).reshape(len(queries), n_images, variants)
    return per_variant.max(axis=2) if aggregation == "max" else per_variant.mean(axis=2)


def run_proxy(dataset: CaptionDataset, cache: EmbeddingCache, settings: ProxySettings) -> RetrievalRun:
    """Evaluate one setting of the proxy; the run is labelled "proxy" wherever it is shown."""
    started = time.perf_counter()
    scores = proxy_scores(dataset, cache, settings)
    run = evaluate_scores(
        scores, dataset.queries(), dataset.image_ids,
        name=settings.describe(cache.name), label=PROXY_LABEL,
        config={"mode": PROXY_LABEL, "embedder": cache.name, "variants": settings.variants,
                "aggregation": settings.aggregation, "lexical": settings.lexical},
        tolerance=FUSED_TIE_TOLERANCE if settings.lexical else TIE_TOLERANCE,
    )
    run.seconds = time.perf_counter() - started
    return run


def check_settings(dataset: CaptionDataset, settings: ProxySettings) -> None:
    """The proxy needs a held-out caption besides the variants, for every image."""
    if settings.aggregation not in AGGREGATIONS:
        raise EvaluationError(
            f"Unknown aggregation {settings.aggregation!r}: use one of {', '.join(AGGREGATIONS)}."
        )
    if not dataset.items:
        raise EvaluationError(f"{dataset.source} has no images to evaluate.")
    fewest = min(dataset.items, key=lambda item: len(item.captions))
    most = len(fewest.captions) - 1
    if not 1 <= settings.variants <= most:
        allowed = f"use 1 to {most} variants" if most else "give every image 2 or more captions"
        raise EvaluationError(
            f"--variants {settings.variants} is not possible with {dataset.source}: image "
            f"{fewest.id!r} has {len(fewest.captions)} caption(s) and the proxy holds one "
            f"out as the query; {allowed}."
        )
