"""`tilescribe index`: tile a raster, caption each tile with a VLM, embed and store; resumable."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from ..core.captioning.engine_info import describe_engine
from ..core.captioning.factory import DEFAULT_CAPTIONER, ENGINES, CaptionerSettings, make_captioner
from ..core.errors import ModelError
from ..core.indexing.index_settings import INDEX_SUFFIX, IndexSettings, default_index_path
from ..core.indexing.indexer import MAX_TILE_ATTEMPTS, index_raster
from ..core.index.locking import IndexerLock
from ..core.raster.rendering import RenderSettings
from ..core.raster.sources import raster_inputs
from ..core.index.store import Store
from .common import add_embedder_argument, load_embedder, non_negative_int, positive_int, say
from .progress import ProgressBar, format_duration


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index", help="caption and index the tiles of a raster",
        description="Runs again resume where the index stands; Ctrl-C stops after the tile "
                    "in progress, keeping everything captioned so far.")
    parser.add_argument("raster", nargs="+",
                        help="GeoTIFF, VRT or any raster GDAL reads; several, or a folder of rasters")
    parser.add_argument("--db", default=None,
                        help=f"index file (default: beside each raster, *{INDEX_SUFFIX}); with several "
                             "rasters, one index holding them all (one run per raster)")
    parser.add_argument("--vrt-sources", action="store_true",
                        help="index the files each .vrt mosaics, one run per file, instead of the VRT")
    add_captioner_arguments(parser)
    parser.add_argument("--tile-size", type=positive_int, default=IndexSettings.tile_size,
                        help=f"tile size in px (default {IndexSettings.tile_size})")
    parser.add_argument("--overlap", type=non_negative_int, default=IndexSettings.overlap,
                        help=f"overlap in px (default {IndexSettings.overlap})")
    parser.add_argument("--variants", type=positive_int, default=IndexSettings.variants,
                        help=f"caption variants per tile (default {IndexSettings.variants})")
    parser.add_argument("--retry-failed", action="store_true",
                        help=f"retry every failed tile (by default each is tried in at most "
                             f"{MAX_TILE_ATTEMPTS} runs, then left failed with its reason)")
    parser.add_argument("--bands", type=positive_int, nargs="+", default=None,
                        help="bands shown as R G B, or one band as grey (default: colour interpretation, else 1 2 3)")
    add_embedder_argument(parser)
    parser.set_defaults(func=run)


def add_captioner_arguments(parser) -> None:
    group = parser.add_argument_group("captioning model (a local GGUF pair, or a server)")
    group.add_argument("--model", help="GGUF vision-language model (text part)")
    group.add_argument("--mmproj", help="GGUF vision projector belonging to --model")
    group.add_argument("--family", default=DEFAULT_CAPTIONER.family,
                       help=f"chat template family (default: {DEFAULT_CAPTIONER.family})")
    group.add_argument("--threads", type=positive_int, default=None, help="CPU threads for llama.cpp")
    group.add_argument("--n-ctx", type=context_size, default=None,
                       help="context size per sequence in tokens (default auto: prompt + image + answer)")
    group.add_argument("--gpu-layers", type=non_negative_int, default=DEFAULT_CAPTIONER.n_gpu_layers,
                       help="layers offloaded to a GPU")
    group.add_argument("--engine", choices=ENGINES, default=DEFAULT_CAPTIONER.engine,
                       help="for --model/--mmproj: run llama.cpp in this process (default), or start "
                            "llama.cpp's llama-server with --slots tiles decoded together (faster)")
    group.add_argument("--slots", type=positive_int, default=DEFAULT_CAPTIONER.slots,
                       help=f"llama-server slots (default {DEFAULT_CAPTIONER.slots})")
    group.add_argument("--llama-server", metavar="PATH",
                       help="llama-server program (default: built by setup, else PATH)")
    group.add_argument("--server", nargs="+", action="extend", metavar="URL",
                       help="OpenAI-compatible server URL instead of a local model; several share the tiles")
    group.add_argument("--server-model", help="model name to ask the server for")
    group.add_argument("--api-key-env", help="environment variable holding the server's API key")
    group.add_argument("--parallel", type=positive_int, default=DEFAULT_CAPTIONER.parallel_requests,
                       help=f"requests in flight per server (default {DEFAULT_CAPTIONER.parallel_requests})")
    group.add_argument("--timeout", type=_seconds, default=DEFAULT_CAPTIONER.timeout_s, metavar="SECONDS",
                       help="give up a server request after this long without an answer from that "
                            f"server (default {DEFAULT_CAPTIONER.timeout_s:g})")
    group.add_argument("--test-model", action="store_true",
                       help="tiny random-weight model: tests the pipeline, captions are meaningless")


def captioner_settings(args) -> CaptionerSettings:
    if args.test_model and (args.model or args.mmproj or args.server):
        other = "--server" if args.server else "--model/--mmproj"
        raise ModelError(f"--test-model and {other} both name a captioning model: give one of them "
                         "(--test-model only tests the pipeline; its captions are meaningless).")
    if not (args.model or args.mmproj or args.server or args.test_model):
        return CaptionerSettings.from_environment()
    return CaptionerSettings(
        model=args.model, mmproj=args.mmproj, family=args.family, server_url=_servers(args.server),
        server_model=args.server_model, api_key_env=args.api_key_env, parallel_requests=args.parallel,
        timeout_s=args.timeout,
        n_threads=args.threads, n_ctx=args.n_ctx, n_gpu_layers=args.gpu_layers, test_model=args.test_model,
        engine=args.engine, slots=args.slots, llama_server=args.llama_server,
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 (got {text})")
    return value


def _servers(urls):
    """One URL as a string, as before; several as a tuple."""
    if not urls:
        return None
    return urls[0] if len(urls) == 1 else tuple(urls)


def context_size(text: str):
    """--n-ctx: "auto" or a number of tokens."""
    return None if text.strip().lower() == "auto" else positive_int(text)


def run(args) -> int:
    # Before any OpenMP runtime loads: the embedder's imports (scikit-learn) load one first,
    # and its spinning threads then slowed llama.cpp's captioning ten-fold (llama_backend.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    settings = captioner_settings(args)
    if settings.is_placeholder:
        say("note: no VLM given (--model/--mmproj, --server, or TILESCRIBE_MODEL/TILESCRIBE_MMPROJ): "
            "using the tiny test model, whose captions are meaningless placeholders.")
    rasters = [str(r) for r in raster_inputs(args.raster, vrt_sources=args.vrt_sources)]
    jobs = [(raster, Path(args.db or default_index_path(raster))) for raster in rasters]
    index_settings = IndexSettings(args.tile_size, args.overlap, args.variants,
                                   RenderSettings(bands=tuple(args.bands) if args.bands else None),
                                   retry_failed=args.retry_failed)
    for db in dict.fromkeys(db for _, db in jobs):
        IndexerLock(db).check_free()  # a second indexer is refused before it spends time loading models
    stop, terminated = threading.Event(), threading.Event()
    previous_term = signal.signal(signal.SIGTERM, lambda *_: _terminate(stop, terminated))
    codes = []
    try:
        for raster, db, report in _index(args, jobs, settings, index_settings, stop):
            codes.append(_summary(raster, db, report))
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    code = 130 if 130 in codes else max(codes, default=0)
    if len(jobs) > 1:
        say(f"{len(codes)} of {len(jobs)} rasters {'stopped or ' if code == 130 else ''}done"
            + (f" into {args.db}" if args.db else ""))
    return 128 + signal.SIGTERM if terminated.is_set() else code  # the status a SIGTERM death has


def _index(args, jobs, settings: CaptionerSettings, index_settings: IndexSettings, stop: threading.Event):
    """(raster, db, report) of each raster in turn, with one captioner and one embedder for all."""
    captioner = make_captioner(settings)  # first: a bad model file is reported in a second, not ten
    say(f"captioning with {describe_engine(captioner)}")
    for warning in getattr(captioner, "warnings", ()):
        say(f"warning: {warning}")
    previous = signal.signal(signal.SIGINT, lambda *_: _first_interrupt(stop, previous, captioner))
    try:
        embedder = load_embedder(args.embedder)
        for number, (raster, db) in enumerate(jobs, start=1):
            if stop.is_set():
                break
            if len(jobs) > 1:
                say(f"[{number}/{len(jobs)}] {raster}")
            bar = ProgressBar()
            try:
                with Store(db, create=True) as store:
                    report = index_raster(store, captioner, embedder, raster, index_settings,
                                          progress=bar, cancel=stop.is_set)
            finally:
                bar.close()
            yield raster, db, report
    finally:
        signal.signal(signal.SIGINT, previous)
        captioner.close()


def _summary(raster: str, db: Path, report) -> int:
    p = report.progress
    for warning in report.warnings:
        say(f"warning: {warning}")
    say(f"{'stopped' if report.cancelled else 'finished'}: {db} run {report.run_id}: {p.done} of "
        f"{p.total} tiles captioned ({p.captioned_now} now), {p.skipped} skipped, {p.failed} failed, "
        f"in {format_duration(p.elapsed_s)}")
    if p.total and p.skipped == p.total:
        say(f"note: no tile of {raster} has content (all nodata, masked or one colour): "
            "check the raster's nodata value and --bands.")
    for key, reason in report.failures[:5]:
        say(f"  tile {key} failed: {reason}")
    if report.cancelled:
        say("run the same command again to continue.")
        return 130
    return 1 if p.failed else 0


def _terminate(stop: threading.Event, terminated: threading.Event) -> None:
    # Like a first Ctrl-C: a service manager's stop must not lose the tile batch in progress.
    say("\nterminated (SIGTERM): stopping after the tile in progress (committed tiles are kept)")
    terminated.set()
    stop.set()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once


def _first_interrupt(stop: threading.Event, previous, captioner) -> None:
    say("\nstopping after the tile in progress (Ctrl-C again to abort now; committed tiles are kept)")
    stop.set()
    signal.signal(signal.SIGINT, lambda *_: _second_interrupt(captioner))


def _second_interrupt(captioner) -> None:
    cancel = getattr(captioner, "cancel", None)
    if cancel is not None:
        cancel()  # requests under way end within a second (no lock: safe in a signal handler)
    raise KeyboardInterrupt
