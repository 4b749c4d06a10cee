"""Evaluation: caption datasets, R@1/5/10 and mR, the oracle-caption proxy, end-to-end runs and reports."""

from .datasets import CaptionDataset, CaptionItem, load_dataset
from .end_to_end import (
    END_TO_END_LABEL,
    PLACEHOLDER_NOTE,
    EndToEndProgress,
    EndToEndResult,
    EndToEndSettings,
    format_end_to_end,
    max_variant_scores,
    run_end_to_end,
    write_end_to_end_report,
)
from .end_to_end_plan import (
    RasterJob,
    captioner_label,
    default_cache_path,
    limit_dataset,
    plan_jobs,
    with_images_dir,
)
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
    "AGGREGATIONS", "END_TO_END_LABEL", "PLACEHOLDER_NOTE", "PROXY_LABEL", "CaptionDataset",
    "CaptionItem", "EmbeddingCache", "EndToEndProgress", "EndToEndResult", "EndToEndSettings",
    "EvaluationError", "ProxySettings", "Query", "RasterJob", "RetrievalRun", "captioner_label",
    "compare_runs", "default_cache_path", "evaluate_rankings", "evaluate_scores", "format_comparison",
    "format_end_to_end", "format_table", "limit_dataset", "load_dataset", "max_variant_scores",
    "pick_run", "plan_jobs", "ranks_from_rankings", "ranks_from_scores", "read_rank_file",
    "recall_at", "run_end_to_end", "run_proxy", "run_proxy_grid", "with_images_dir",
    "write_end_to_end_report", "write_rank_file", "write_report",
]
