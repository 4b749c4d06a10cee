"""Text-to-image recall: ranks from a score matrix or from ranked lists, R@1/5/10 and mR."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import TileScribeError

RECALL_AT = (1, 5, 10)
# Identical texts embedded in different batches, or multiplied by different BLAS
# kernels, differ in the last bits; closer scores than this count as a tie.
TIE_TOLERANCE = 1e-6


class EvaluationError(TileScribeError):
    """An evaluation cannot run with these inputs or options."""


@dataclass(frozen=True)
class Query:
    """A human caption used as a query; `target` is the row of its image in the gallery."""

    id: str
    text: str
    target: int


@dataclass
class RetrievalRun:
    """Per-query ranks of one evaluated setting; `label` says "proxy" or "end-to-end"."""

    name: str
    label: str
    config: dict
    queries: tuple[Query, ...]
    image_ids: tuple[str, ...]
    ranks: np.ndarray  # ties counted against the true image
    optimistic_ranks: np.ndarray  # ties counted for it (how the data README's numbers were made)
    seconds: float = field(default=0.0)

    def recalls(self, *, optimistic: bool = False) -> dict[str, float]:
        return recall_at(self.optimistic_ranks if optimistic else self.ranks)


def ranks_from_scores(
    scores: np.ndarray,
    targets: Sequence[int],
    *,
    optimistic: bool = False,
    tolerance: float = TIE_TOLERANCE,
) -> np.ndarray:
    """Rank of each query's target image in its row of `scores` (queries x images), 1 = best.

    Pessimistic (default): 1 + number of other images scoring >= the target.
    Optimistic: 1 + number of images scoring strictly more.
    """
    scores = np.asarray(scores)
    targets = _check_targets(targets, scores)
    true = scores[np.arange(len(targets)), targets][:, None]
    if optimistic:
        return (scores > true + tolerance).sum(axis=1) + 1
    return (scores >= true - tolerance).sum(axis=1)  # the target itself is the +1


def ranks_from_rankings(
    rankings: Sequence[Sequence[int]], targets: Sequence[int], n_images: int
) -> np.ndarray:
    """Rank of each target in ranked lists of image rows (a search engine's top hits).

    A target missing from its list gets the worst rank, `n_images`.
    """
    if len(rankings) != len(targets):
        raise EvaluationError(f"{len(rankings)} ranked lists for {len(targets)} queries.")
    ranks = np.full(len(targets), n_images, dtype=np.int64)
    for row, (ranking, target) in enumerate(zip(rankings, targets)):
        hits = np.flatnonzero(np.asarray(ranking) == target)
        if hits.size:
            ranks[row] = hits[0] + 1
    return ranks


def recall_at(ranks: np.ndarray, ks: Sequence[int] = RECALL_AT) -> dict[str, float]:
    """R@K in percent (share of queries whose image ranks in the top K) and mR, their mean."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise EvaluationError("No queries to evaluate: the dataset has no captions.")
    values = {f"R@{k}": 100.0 * float(np.mean(ranks <= k)) for k in ks}
    values["mR"] = float(np.mean(list(values.values())))
    return values


def evaluate_scores(
    scores: np.ndarray,
    queries: Sequence[Query],
    image_ids: Sequence[str],
    *,
    name: str,
    label: str,
    config: dict,
    tolerance: float = TIE_TOLERANCE,
) -> RetrievalRun:
    """Score every query against every image (rows = `queries`, columns = `image_ids`)."""
    if np.shape(scores) != (len(queries), len(image_ids)):
        raise EvaluationError(
            f"Score matrix is {np.shape(scores)}; expected {len(queries)} queries x "
            f"{len(image_ids)} images."
        )
    targets = [query.target for query in queries]
    return RetrievalRun(
        name, label, dict(config), tuple(queries), tuple(image_ids),
        ranks_from_scores(scores, targets, tolerance=tolerance),
        ranks_from_scores(scores, targets, optimistic=True, tolerance=tolerance),
    )


def evaluate_rankings(
    rankings: Sequence[Sequence[int]],
    queries: Sequence[Query],
    image_ids: Sequence[str],
    *,
    name: str,
    label: str,
    config: dict,
) -> RetrievalRun:
    """Evaluate ranked lists of image rows; a list has no ties, so both tie rules agree."""
    ranks = ranks_from_rankings(rankings, [query.target for query in queries], len(image_ids))
    return RetrievalRun(name, label, dict(config), tuple(queries), tuple(image_ids),
                        ranks, ranks.copy())


def _check_targets(targets: Sequence[int], scores: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != len(targets):
        raise EvaluationError(
            f"Score matrix of shape {scores.shape} does not match {len(targets)} queries."
        )
    if targets.size and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise EvaluationError(f"A query's target image is outside the {scores.shape[1]} images scored.")
    return targets
