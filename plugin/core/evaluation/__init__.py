"""Evaluation: caption datasets, R@1/5/10 and mR, the oracle-caption proxy and its reports."""

from .datasets import CaptionDataset, CaptionItem, load_dataset
from .metrics import (
    EvaluationError,
    Query,
    RetrievalRun,
    evaluate_rankings,
    evaluate_scores,
    ranks_from_rankings,
    ranks_from_scores,
    recall_at,
)
from .proxy import AGGREGATIONS, PROXY_LABEL, EmbeddingCache, ProxySettings, run_proxy
from .ranks import compare_runs, pick_run, read_rank_file, write_rank_file
from .report import format_comparison, format_table, run_proxy_grid, write_report

__all__ = [
    "AGGREGATIONS", "PROXY_LABEL", "CaptionDataset", "CaptionItem", "EmbeddingCache",
    "EvaluationError", "ProxySettings", "Query", "RetrievalRun", "compare_runs",
    "evaluate_rankings", "evaluate_scores", "format_comparison", "format_table",
    "load_dataset", "pick_run", "ranks_from_rankings", "ranks_from_scores", "read_rank_file",
    "recall_at", "run_proxy", "run_proxy_grid", "write_rank_file", "write_report",
]
