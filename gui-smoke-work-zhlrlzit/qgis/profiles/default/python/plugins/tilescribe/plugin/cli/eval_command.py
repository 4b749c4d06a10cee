"""`tilescribe eval`: R@1/5/10 and mR end to end (a VLM captions the images) or by the proxy."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from ..core.captioning.factory import make_captioner
from ..core.evaluation import (
    AGGREGATIONS,
    PLACEHOLDER_NOTE,
    EndToEndSettings,
    EvaluationError,
    captioner_label,
    compare_runs,
    default_cache_path,
    format_comparison,
    format_end_to_end,
    format_table,
    limit_dataset,
    load_dataset,
    pick_run,
    plan_jobs,
    read_rank_file,
    run_end_to_end,
    run_proxy_grid,
    with_images_dir,
    write_end_to_end_report,
    write_rank_file,
    write_report,
)
from ..core.embedding import SentenceTransformerEmbedder
from ..core.evaluation.proxy import ProxySettings, check_settings
from ..core.evaluation.through_search import check_through_search, run_search_grid
from .common import positive_int, say
from .index_command import add_captioner_arguments, captioner_settings
from .progress import format_duration

# Captions are short and length-sorted by sentence-transformers, so big batches pad
# little; on 2 cores 256 costs about a third less CPU per text than 64.
EVAL_BATCH_SIZE = 256
COMPARE_LIMIT = 15
END_TO_END_VARIANTS = EndToEndSettings.variants
PROXY_VARIANTS = 4  # data/README.md's reference numbers hold one caption out of five


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure retrieval (R@1/5/10, mR) on a caption dataset",
        description="End to end (default): a VLM captions the dataset's images into a cached "
                    "index (run again: nothing is captioned twice), every human caption is a "
                    "query, images are ranked by their best caption variant. --proxy: each "
                    "image's human captions stand in for its variants (text stage only, no "
                    "images needed). --compare lists the queries that got better or worse "
                    "between two runs.",
    )
    parser.add_argument("--proxy", action="store_true",
                        help="oracle-caption proxy (no images or VLM needed)")
    parser.add_argument("--captions", type=Path, metavar="DIR_OR_JSON",
                        help="folder with test_caps.txt + test_filename.txt, "
                             "or a JSON of images or tiles")
    parser.add_argument("--variants", nargs="+", default=None, metavar="N",
                        help=f"variants per image: end to end one number (default {END_TO_END_VARIANTS}); "
                             f"proxy one or more numbers, or 'all' (default {PROXY_VARIANTS})")
    parser.add_argument("--aggregation", choices=AGGREGATIONS + ("all",), default=None,
                        help="proxy: image score from its variants (default max)")
    parser.add_argument("--embedder", nargs="+", type=Path, default=None, metavar="PATH",
                        help="sentence-transformers folder(s) (default: all-MiniLM-L6-v2); "
                             "the proxy compares several")
    parser.add_argument("--lexical", action="store_true",
                        help="proxy: also run each setting with BM25 fused in (reciprocal rank fusion)")
    parser.add_argument("--through-search", action="store_true",
                        help="proxy: write each fold's variants into a real index (one tile per image) "
                             "and run every query through `search` (with --lexical: also with its "
                             "FTS5 fusion); slower, measures search's own code path")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON")
    parser.add_argument("--ranks", type=Path, metavar="OUT", help="write per-query ranks as JSON")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="compare two rank files query by query")
    parser.add_argument("--runs", nargs=2, metavar=("NAME_BEFORE", "NAME_AFTER"),
                        help="with --compare: which run of each file (default: the first)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help=f"end to end: only the first N images; with --compare: queries "
                             f"listed per direction (default {COMPARE_LIMIT})")
    _add_end_to_end_arguments(parser)
    parser.set_defaults(func=run)


def _add_end_to_end_arguments(parser) -> None:
    group = parser.add_argument_group("end to end")
    group.add_argument("--db", type=Path, default=None, metavar="CACHE",
                       help="index file caching the captions (default: ~/.cache/tilescribe/eval/"
                            "<dataset>-<captioner>-<hash>.tilescribe.sqlite)")
    group.add_argument("--images-dir", type=Path, default=None, metavar="DIR",
                       help="folder holding the images, if not where the JSON says")
    group.add_argument("--raster", type=Path, default=None, metavar="MOSAIC",
                       help="for a JSON of mosaic tiles: the mosaic raster (default: the one "
                            "raster beside the JSON whose name starts like it)")
    add_captioner_arguments(parser)


def run(args) -> int:
    if args.compare:
        return _compare(args)
    if args.captions is None:
        raise EvaluationError("Give --captions DIR_OR_JSON (a caption dataset) to evaluate.")
    if args.proxy:
        return _run_proxy(args)
    return _run_end_to_end(args)


def _run_proxy(args) -> int:
    dataset = load_dataset(args.captions)
    variant_counts = parse_variant_counts(args.variants or [str(PROXY_VARIANTS)], dataset)
    aggregation = args.aggregation or "max"
    aggregations = AGGREGATIONS if aggregation == "all" else (aggregation,)
    # Fail before a model loads and minutes of embedding, not after.
    for count in variant_counts:
        if args.through_search:
            check_through_search(dataset, ProxySettings(count, aggregation))
        else:
            check_settings(dataset, ProxySettings(count))
    _check_outputs(args)
    started, runs = time.perf_counter(), []
    with _unwinding_on_sigterm():
        for folder in args.embedder or [None]:
            if args.through_search:
                runs += run_search_grid(dataset, load_embedder(folder), aggregation, variant_counts,
                                        args.lexical, progress=say)
            else:
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


@contextlib.contextmanager
def _unwinding_on_sigterm():
    """SIGTERM ends the run as Ctrl-C does, by unwinding: --through-search's temporary fold
    indexes are removed instead of left in TMPDIR. A second SIGTERM ends the process at once."""
    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_end_to_end(args) -> int:
    """Everything that can be wrong with the inputs is reported before a model is loaded."""
    # Before any OpenMP runtime loads: its spinning threads slow llama.cpp (see index_command).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _refuse_proxy_options(args)
    dataset = with_images_dir(load_dataset(args.captions), args.images_dir)
    dataset = limit_dataset(dataset, args.limit)
    jobs = plan_jobs(dataset, args.raster)
    variants = _end_to_end_variants(args.variants)
    settings = _chosen_captioner(args)
    _check_outputs(args, args.db)
    db = args.db or default_cache_path(dataset, settings)
    if args.db is None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if settings.is_placeholder:
        say(PLACEHOLDER_NOTE)
    progress = ImageProgress()
    captioner = make_captioner(settings)
    try:
        embedder = load_embedder(args.embedder[0] if args.embedder else None)
        say(f"captions: {db} ({len(dataset)} images, {variants} variants each)")
        result = run_end_to_end(dataset, jobs, db, captioner, embedder,
                                EndToEndSettings(variants, captioner_label(settings),
                                                 settings.is_placeholder), progress=progress)
    finally:
        progress.close()
        captioner.close()
    _show_end_to_end(args, result)
    return 0


def _show_end_to_end(args, result) -> None:
    gallery = result.gallery
    print(format_end_to_end(result))
    say(f"captioned {gallery.captioned_now} images now, {gallery.from_cache} from the cache, "
        f"in {format_duration(gallery.seconds)}; evaluation took {result.run.seconds:.1f} s")
    for item, why in gallery.missing[:5]:
        say(f"  image {item} has no captions ({why}); it ranks last. Run again to retry failed ones.")
    if args.json:
        write_end_to_end_report(args.json, result)
        say(f"wrote the report to {args.json}")
    if args.ranks:
        write_rank_file(args.ranks, [result.run], result.dataset.name)
        say(f"wrote per-query ranks to {args.ranks}")


def _refuse_proxy_options(args) -> None:
    if args.lexical or args.through_search or args.aggregation not in (None, "max"):
        raise EvaluationError(
            "--lexical, --through-search and --aggregation are proxy options: end-to-end scores "
            "an image by its best caption variant, as search does. Add --proxy, or drop them."
        )
    if args.embedder and len(args.embedder) > 1:
        raise EvaluationError("End-to-end evaluation takes one --embedder; the proxy compares several.")


def _end_to_end_variants(values: list[str] | None) -> int:
    if values is None:
        return END_TO_END_VARIANTS
    if len(values) == 1 and values[0].isdigit() and int(values[0]) > 0:
        return int(values[0])
    raise EvaluationError(
        f"--variants {' '.join(values)}: end-to-end takes one whole number of caption variants "
        f"per image (default {END_TO_END_VARIANTS})."
    )


def _chosen_captioner(args):
    settings = captioner_settings(args)
    if settings.test_model and not args.test_model:  # nothing given, nothing in the environment
        raise EvaluationError(
            "Give the captioning model: --model M.gguf --mmproj P.gguf, or --server URL "
            "--server-model NAME (or TILESCRIBE_MODEL/TILESCRIBE_MMPROJ), or --test-model to "
            "check the pipeline with meaningless placeholder captions. --proxy needs no model."
        )
    return settings


def _check_outputs(args, *more: Path | None) -> None:
    for output in (args.json, args.ranks, *more):
        if output is not None and not output.resolve().parent.is_dir():
            raise EvaluationError(f"Cannot write {output}: its folder does not exist.")


class ImageProgress:
    """`captioning 12/210 images (12 by the model now) 01:02 left` on stderr, redrawn on a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # looked up now: tests swap sys.stderr
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.min_interval = 0.25 if self.tty else 5.0
        self._last = 0.0
        self._shown = -1  # images finished at the last line shown

    def __call__(self, p) -> None:
        now = time.monotonic()
        final = p.finished >= p.total
        if (not final and now - self._last < self.min_interval) or p.finished == self._shown:
            return
        self._last, self._shown = now, p.finished
        line = (f"captioning {p.finished}/{p.total} images ({p.captioned_now} by the model now, "
                f"{format_duration(p.elapsed_s)} so far, {format_duration(p.eta_s)} left)")
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


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
    print(format_comparison(compare_runs(before, after), args.limit or COMPARE_LIMIT))
    return 0
