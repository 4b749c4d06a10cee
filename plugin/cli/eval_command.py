"""`tilescribe eval`: R@1/5/10 and mR by the oracle-caption proxy, and query-by-query comparisons."""

from __future__ import annotations

import time
from pathlib import Path

from ..core.evaluation import (
    AGGREGATIONS,
    EvaluationError,
    compare_runs,
    format_comparison,
    format_table,
    load_dataset,
    pick_run,
    read_rank_file,
    run_proxy_grid,
    write_rank_file,
    write_report,
)
from ..core.embedding import SentenceTransformerEmbedder
from ..core.evaluation.proxy import ProxySettings, check_settings
from .common import positive_int, say

# Captions are short and length-sorted by sentence-transformers, so big batches pad
# little; on 2 cores 256 costs about a third less CPU per text than 64.
EVAL_BATCH_SIZE = 256


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure retrieval (R@1/5/10, mR) on a caption dataset",
        description="Proxy mode: each image's human captions stand in for its caption "
                    "variants and the held-out caption is the query (text stage only). "
                    "--compare lists the queries that got better or worse between two runs.",
    )
    parser.add_argument("--proxy", action="store_true",
                        help="oracle-caption proxy (no images or VLM needed)")
    parser.add_argument("--captions", type=Path, metavar="DIR_OR_JSON",
                        help="folder with test_caps.txt + test_filename.txt, "
                             "or a JSON of images or tiles")
    parser.add_argument("--variants", nargs="+", default=["4"], metavar="N",
                        help="variants per image, one or more numbers, or 'all' (default 4)")
    parser.add_argument("--aggregation", choices=AGGREGATIONS + ("all",), default="max",
                        help="image score from its variants (default max)")
    parser.add_argument("--embedder", nargs="+", type=Path, default=None, metavar="PATH",
                        help="sentence-transformers folders to compare (default: all-MiniLM-L6-v2)")
    parser.add_argument("--lexical", action="store_true",
                        help="also run each setting with BM25 fused in (reciprocal rank fusion)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON")
    parser.add_argument("--ranks", type=Path, metavar="OUT", help="write per-query ranks as JSON")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="compare two rank files query by query")
    parser.add_argument("--runs", nargs=2, metavar=("NAME_BEFORE", "NAME_AFTER"),
                        help="with --compare: which run of each file (default: the first)")
    parser.add_argument("--limit", type=positive_int, default=15,
                        help="with --compare: queries listed per direction (default 15)")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.compare:
        return _compare(args)
    if not args.proxy:
        raise EvaluationError(
            "Give --proxy: this version evaluates the text stage with the oracle-caption "
            "proxy; end-to-end evaluation (captioning the images with a VLM) is not in it yet."
        )
    if args.captions is None:
        raise EvaluationError("--proxy needs --captions DIR_OR_JSON (a caption dataset).")
    dataset = load_dataset(args.captions)
    variant_counts = parse_variant_counts(args.variants, dataset)
    aggregations = AGGREGATIONS if args.aggregation == "all" else (args.aggregation,)
    # Fail before minutes of embedding, not after.
    for count in variant_counts:
        check_settings(dataset, ProxySettings(count))
    for output in (args.json, args.ranks):
        if output is not None and not output.resolve().parent.is_dir():
            raise EvaluationError(f"Cannot write {output}: its folder does not exist.")
    started, runs = time.perf_counter(), []
    for folder in args.embedder or [None]:
        runs += run_proxy_grid(dataset, load_embedder(folder), aggregations, variant_counts,
                               args.lexical, progress=say)
    print(format_table(dataset, runs))
    say(f"proxy evaluation took {time.perf_counter() - started:.1f} s")
    if args.json:
        write_report(args.json, dataset, runs)
        say(f"wrote the report to {args.json}")
    if args.ranks:
        write_rank_file(args.ranks, runs, dataset.name)
        say(f"wrote per-query ranks to {args.ranks}")
    return 0


def load_embedder(folder: Path | None):
    return SentenceTransformerEmbedder(folder, batch_size=EVAL_BATCH_SIZE)


def parse_variant_counts(values: list[str], dataset) -> list[int]:
    """Numbers as given, or 'all': 1 up to one less than the fewest captions of an image."""
    fewest = min((len(item.captions) for item in dataset.items), default=0)
    if values == ["all"]:
        return list(range(1, fewest)) or [1]  # [1] lets the proxy say why it cannot run
    try:
        counts = [int(value) for value in values]
    except ValueError:
        raise EvaluationError(
            f"--variants takes whole numbers or 'all', not {' '.join(values)!r}."
        ) from None
    return list(dict.fromkeys(counts))


def _compare(args) -> int:
    before_path, after_path = args.compare
    names = args.runs or (None, None)
    before = pick_run(read_rank_file(before_path), names[0], before_path)
    after = pick_run(read_rank_file(after_path), names[1], after_path)
    print(format_comparison(compare_runs(before, after), args.limit))
    return 0
