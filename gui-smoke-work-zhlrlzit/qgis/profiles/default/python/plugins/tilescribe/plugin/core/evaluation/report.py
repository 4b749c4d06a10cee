"""Proxy comparison report: run a grid of settings, show it as a table, save it as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from .datasets import CaptionDataset
from .metrics import RECALL_AT, RetrievalRun
from .proxy import PROXY_LABEL, EmbeddingCache, ProxySettings, run_proxy
from .ranks import RankComparison, recall_change

METRICS = tuple(f"R@{k}" for k in RECALL_AT) + ("mR",)
PROXY_NOTE = ("PROXY: human captions stand in for generated variants (oracle-caption proxy); "
              "this measures the text stage only and is not a retrieval result.")


def run_proxy_grid(
    dataset: CaptionDataset,
    embedder,
    aggregations: Sequence[str],
    variant_counts: Sequence[int],
    lexical: bool,
    progress: Callable[[str], None] = lambda message: None,
) -> list[RetrievalRun]:
    """Every combination of settings for one embedder; each distinct text is embedded once."""
    cache = EmbeddingCache(embedder)
    runs = []
    for aggregation in aggregations:
        for variants in variant_counts:
            for fused in ((False, True) if lexical else (False,)):
                run = run_proxy(dataset, cache, ProxySettings(variants, aggregation, fused))
                progress(f"{run.label} {run.name}: mR {run.recalls()['mR']:.2f} "
                         f"({run.seconds:.1f} s)")
                runs.append(run)
    progress(f"{PROXY_LABEL} {cache.name}: {cache.seconds:.1f} s spent embedding texts")
    return runs


def format_table(dataset: CaptionDataset, runs: Sequence[RetrievalRun]) -> str:
    """A fixed-width table, one row per run; ties pessimistic, with mR-opt for reference."""
    label_width = max(len("mode"), *(len(run.label) for run in runs))
    name_width = max(len("setting"), *(len(run.name) for run in runs))
    columns = " ".join(f"{metric:>6}" for metric in METRICS + ("mR-opt",))
    header = f"{'mode':<{label_width}} {'setting':<{name_width}} {columns}"
    lines = [PROXY_NOTE] if any(run.label == PROXY_LABEL for run in runs) else []
    lines += [f"dataset {dataset.name}: {len(dataset)} images, {len(runs[0].queries)} queries",
              header, "-" * len(header)]
    for run in runs:
        values = run.recalls()
        cells = " ".join(f"{values[m]:6.2f}" for m in METRICS)
        optimistic = run.recalls(optimistic=True)["mR"]
        lines.append(f"{run.label:<{label_width}} {run.name:<{name_width}} {cells} {optimistic:6.2f}")
    lines.append("R@K in %, ties counted against the true image; mR-opt counts ties for it.")
    return "\n".join(lines)


def report_data(dataset: CaptionDataset, runs: Sequence[RetrievalRun]) -> dict:
    labels = sorted({run.label for run in runs})
    return {
        "label": labels[0] if len(labels) == 1 else labels,
        "note": PROXY_NOTE if PROXY_LABEL in labels else None,
        "dataset": {"name": dataset.name, "source": str(dataset.source),
                    "images": len(dataset), "queries": len(runs[0].queries)},
        "ties": "pessimistic: rank = 1 + number of other images scoring >= the true image; "
                "metrics_optimistic: rank = 1 + number scoring strictly more",
        "runs": [{"name": run.name, "label": run.label, "config": run.config,
                  "metrics": run.recalls(), "metrics_optimistic": run.recalls(optimistic=True),
                  "seconds": round(run.seconds, 3)} for run in runs],
    }


def write_report(path: str | Path, dataset: CaptionDataset, runs: Sequence[RetrievalRun]) -> None:
    Path(path).write_text(json.dumps(report_data(dataset, runs), indent=2) + "\n", encoding="utf-8")


def format_comparison(comparison: RankComparison, limit: int = 15) -> str:
    """Summary of metric changes, then the queries that moved most in each direction."""
    before, after = comparison.before, comparison.after
    lines = [f"{before.label} {before.name!r} -> {after.label} {after.name!r}: "
             f"{len(comparison.better)} queries better, {len(comparison.worse)} worse, "
             f"{comparison.unchanged} unchanged"]
    lines += [f"  {metric:>5}: {old:6.2f} -> {new:6.2f} ({new - old:+.2f})"
              for metric, (old, new) in recall_change(comparison).items()]
    for title, changes in (("better", comparison.better), ("worse", comparison.worse)):
        if changes:
            lines.append(f"{title} (top {min(limit, len(changes))} of {len(changes)}):")
            lines += [f"  {change.before:>5} -> {change.after:<5} {change.query_id}  {change.text}"
                      for change in changes[:limit]]
    return "\n".join(lines)
