"""`tilescribe import-captions`: build an index from captions made elsewhere (JSON lines)."""

from __future__ import annotations

from ..core.indexing.importer import import_captions
from ..core.index.store import Store
from .common import add_db_argument, add_embedder_argument, load_embedder, non_negative_int, positive_int, say


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-captions", help="import captions (JSONL) for the tiles of a raster",
        description='Each line: {"window": [col_off, row_off, width, height], "captions": [...]}, '
                    "a caption being a string or an object with one_sentence, feature, caption.",
    )
    parser.add_argument("--raster", required=True, help="the raster the windows refer to")
    parser.add_argument("--captions", required=True, help="JSON-lines caption file")
    add_db_argument(parser)
    add_embedder_argument(parser)
    parser.add_argument("--tile-size", type=positive_int, default=None,
                        help="grid tile size in px (default: the size of the first window)")
    parser.add_argument("--overlap", type=non_negative_int, default=0, help="grid overlap in px")
    parser.set_defaults(func=run)


def run(args) -> int:
    embedder = load_embedder(args.embedder)
    with Store(args.db, create=True) as store:
        report = import_captions(store, embedder, args.raster, args.captions,
                                 tile_size=args.tile_size, overlap=args.overlap)
    for line_no, reason in report.bad_lines:
        say(f"{args.captions}:{line_no}: skipped: {reason}")
    say(f"imported {report.imported} tiles into {args.db} (run {report.run_id}); "
        f"{report.already_done} were already there; {len(report.bad_lines)} lines skipped")
    return 1 if report.bad_lines else 0
