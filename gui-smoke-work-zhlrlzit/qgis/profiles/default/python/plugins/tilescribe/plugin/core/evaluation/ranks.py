"""Per-query rank files, and the query-by-query comparison of two evaluated runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .metrics import EvaluationError, RetrievalRun, recall_at

RANK_FORMAT = "tilescribe-ranks"
RANK_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RankedRun:
    """The ranks of one run as read back from a rank file."""

    name: str
    label: str
    query_ids: tuple[str, ...]
    query_texts: tuple[str, ...]
    ranks: np.ndarray


@dataclass(frozen=True)
class RankChange:
    query_id: str
    text: str
    before: int
    after: int


@dataclass(frozen=True)
class RankComparison:
    """Queries whose image moved up (better) or down (worse) from run `before` to `after`."""

    before: RankedRun
    after: RankedRun
    better: tuple[RankChange, ...]
    worse: tuple[RankChange, ...]
    unchanged: int


def write_rank_file(path: str | Path, runs: Sequence[RetrievalRun], dataset_name: str) -> None:
    """One JSON file: the queries once, then the ranks of every run in query order."""
    first = runs[0]
    if any(run.queries != first.queries for run in runs):
        raise EvaluationError("Runs written to one rank file must share the same queries.")
    data = {
        "format": RANK_FORMAT, "version": RANK_FORMAT_VERSION, "label": first.label,
        "dataset": dataset_name,
        "queries": [{"id": q.id, "text": q.text, "image": first.image_ids[q.target]}
                    for q in first.queries],
        "runs": [{"name": run.name, "label": run.label, "config": run.config,
                  "metrics": run.recalls(), "ranks": run.ranks.tolist(),
                  "optimistic_ranks": run.optimistic_ranks.tolist()} for run in runs],
    }
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_rank_file(path: str | Path) -> list[RankedRun]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(
            f"Rank file not found: {path}. Write one with `tilescribe eval --ranks`."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"Cannot read rank file {path}: {exc}.") from None
    if not isinstance(data, dict) or data.get("format") != RANK_FORMAT:
        raise EvaluationError(f"{path} is not a rank file written by `tilescribe eval --ranks`.")
    if data.get("version") != RANK_FORMAT_VERSION:
        raise EvaluationError(f"{path} is rank file version {data.get('version')}; this "
                              f"tilescribe reads version {RANK_FORMAT_VERSION}.")
    try:
        ids = tuple(str(query["id"]) for query in data["queries"])
        texts = tuple(str(query["text"]) for query in data["queries"])
        runs = [RankedRun(run["name"], run["label"], ids, texts,
                          np.asarray(run["ranks"], dtype=np.int64)) for run in data["runs"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(f"Rank file {path} is damaged ({exc!r}); write it again.") from None
    if not runs or any(run.ranks.shape != (len(ids),) for run in runs):
        raise EvaluationError(f"Rank file {path} has no runs, or ranks that do not match its queries.")
    return runs


def pick_run(runs: Sequence[RankedRun], name: str | None, path: str | Path) -> RankedRun:
    """The run called `name`, or the file's first run when no name is given."""
    if name is None:
        return runs[0]
    for run in runs:
        if run.name == name:
            return run
    names = ", ".join(repr(run.name) for run in runs)
    raise EvaluationError(f"No run named {name!r} in {path}; it holds {names}.")


def compare_runs(before: RankedRun, after: RankedRun) -> RankComparison:
    """Match queries by id and list those whose rank changed.

    Moves near the top matter for R@K, so better queries are listed by their new rank
    and worse ones by their old rank, each then by the size of the move.
    """
    if sorted(before.query_ids) != sorted(after.query_ids):
        raise EvaluationError(
            f"Runs {before.name!r} and {after.name!r} have different queries: compare runs "
            "made on the same caption dataset."
        )
    rank_after = dict(zip(after.query_ids, after.ranks.tolist()))
    changes = [RankChange(qid, text, old, rank_after[qid])
               for qid, text, old in zip(before.query_ids, before.query_texts, before.ranks.tolist())]
    better = sorted((c for c in changes if c.after < c.before), key=lambda c: (c.after, c.after - c.before))
    worse = sorted((c for c in changes if c.after > c.before), key=lambda c: (c.before, c.before - c.after))
    return RankComparison(before, after, tuple(better), tuple(worse),
                          len(changes) - len(better) - len(worse))


def recall_change(comparison: RankComparison) -> dict[str, tuple[float, float]]:
    """(before, after) of each metric, for the summary line of a comparison."""
    old, new = recall_at(comparison.before.ranks), recall_at(comparison.after.ranks)
    return {metric: (old[metric], new[metric]) for metric in old}
