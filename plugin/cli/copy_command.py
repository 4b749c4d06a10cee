"""`tilescribe copy SRC DST`: an index copied between a file and PostgreSQL (either way), resumable."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..core.errors import IndexFileError
from ..core.index.copying import DEFAULT_BATCH, copy_index
from ..core.index.opening import open_index
from ..core.index.target import index_label, is_server_index, parse_target
from .common import positive_int, say


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "copy", help="copy an index between a file and PostgreSQL (either way)",
        description="Copies every raster, embedder, run, tile (with its status and reason), caption and vector "
                    "of SRC into DST, creating DST when missing. Idempotent: what DST already holds is left "
                    "alone, so a second copy adds nothing; resumable: each batch of tiles is one transaction, "
                    "so a copy that was stopped is run again and completes.")
    parser.add_argument("src", metavar="SRC", help="the index to read: a *.tilescribe.sqlite file, or "
                                                   "postgresql://... / service=NAME with ?schema=NAME")
    parser.add_argument("dst", metavar="DST", help="the index to write (created when missing), in the same forms")
    parser.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH,
                        help=f"tiles per transaction (default {DEFAULT_BATCH})")
    parser.add_argument("--build-memory", default=None, metavar="SIZE", type=memory_size,
                        help="PostgreSQL DST: maintenance_work_mem for building the HNSW index after a large load "
                             "(default 2GB; about 1.8 KB per 384-d vector keeps the build in memory)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="what to print when done: a sentence, or JSON counts")
    parser.set_defaults(func=run)


def run(args) -> int:
    if _same_index(args.src, args.dst):
        raise IndexFileError(f"SRC and DST are the same index ({index_label(args.src)}): give another DST.")
    if not is_server_index(args.src) and not Path(args.src).is_file():
        raise IndexFileError(f"The index {args.src} does not exist: give an index file or a PostgreSQL index as SRC.")
    with open_index(args.src, readonly=True) as src, open_index(args.dst, create=True) as dst:
        report = copy_index(src, dst, batch=args.batch, index_memory=args.build_memory,
                            progress=lambda run, seen, total: say(f"  run {run}: {seen:,} of {total:,} tiles"))
    counts = {"runs_created": report.runs_created, "tiles_added": report.tiles_added,
              "tiles_captioned": report.tiles_captioned, "tiles_marked": report.tiles_marked,
              "captions": report.captions, "unchanged": report.unchanged,
              "held_by_indexers": len(report.held_elsewhere), "index_build_s": report.index_build_s,
              "runs": report.runs}
    if args.format == "json":
        print(json.dumps(counts))
    else:
        runs = ", ".join(f"{a} -> {b}" for a, b in report.runs.items()) or "none"
        print(f"copied {index_label(args.src)} into {index_label(args.dst)}: {report.tiles_captioned} tiles with "
              f"{report.captions} captions, {report.tiles_marked} skipped/failed tiles, {report.tiles_added} tiles "
              f"new, {report.unchanged} already there; runs {runs}")
    if report.held_elsewhere:
        say(f"{len(report.held_elsewhere)} tiles were left to the indexers holding them in {index_label(args.dst)}.")
    return 0


def memory_size(text: str) -> str:
    """A PostgreSQL memory setting (512MB, 2GB...), checked before hours of loading rather than after."""
    if not re.fullmatch(r"\d+(kB|MB|GB|TB)", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a PostgreSQL memory size such as 512MB or 3GB")
    return text.strip()


def _same_index(src: str, dst: str) -> bool:
    if is_server_index(src) != is_server_index(dst):
        return False
    if not is_server_index(src):
        return Path(src).resolve() == Path(dst).resolve()
    try:
        return parse_target(src) == parse_target(dst)
    except ValueError:
        return False  # open_index names what is wrong with it
