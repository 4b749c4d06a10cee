"""`tilescribe search`: rank the tiles of an index for a text query."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import TileScribeError
from ..core.index.store import Store
from ..core.search.export import hits_to_geojson, hits_to_json, hits_to_text
from ..core.search.search import SearchRequest, check_extent, check_query, search
from .output_guard import refuse_output_over_index
from .common import add_db_argument, add_embedder_argument, index_writable, load_embedder, say

FORMATTERS = {"text": hits_to_text, "json": hits_to_json, "geojson": hits_to_geojson}


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search an index with a text query")
    parser.add_argument("query", help='what to find, e.g. "a freeway interchange"')
    add_db_argument(parser)
    add_embedder_argument(parser)
    parser.add_argument("-k", type=int, default=SearchRequest.k,
                        help=f"number of tiles to return (default {SearchRequest.k})")
    parser.add_argument("--format", choices=sorted(FORMATTERS), default="text")
    parser.add_argument("--run", type=int, default=None, help="run to search (default: the latest)")
    parser.add_argument("--extent", type=float, nargs=4, metavar=("MINX", "MINY", "MAXX", "MAXY"),
                        help="only tiles meeting this box (in the raster's CRS)")
    parser.add_argument("--lexical", action=argparse.BooleanOptionalAction, default=SearchRequest.lexical,
                        help="fuse the embedding ranking with BM25 word matches over the captions "
                             f"(default: {'on' if SearchRequest.lexical else 'off'})")
    parser.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    parser.set_defaults(func=run)


def run(args) -> int:
    check_query(args.query, args.k)  # before loading a model, so bad input fails fast
    extent = check_extent(args.extent)
    refuse_output_over_index(args.output, args.db)
    # Searching writes nothing; opened writable when it can be, an older index is upgraded on the way.
    with Store(args.db, readonly=not index_writable(Path(args.db))) as store:
        embedder = load_embedder(args.embedder)
        hits = search(store, embedder, SearchRequest(args.query, args.k, args.run, extent, lexical=args.lexical))
        if args.run is None and hits:
            _say_which_run(store, hits[0].run_id)
    text = FORMATTERS[args.format](hits)
    if args.output:
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise TileScribeError(f"Cannot write the results to {args.output}: {exc.strerror}. "
                                  "Give --output a file in a folder you can write.") from exc
        say(f"wrote {len(hits)} results to {args.output}")
    else:
        print(text)
    return 0


def _say_which_run(store: Store, run_id: int) -> None:
    """With several searchable runs (rasters, settings) in one file, name the one searched."""
    others = [r for r in store.searchable_runs() if r != run_id]
    if not others:
        return
    run = store.run_info(run_id)
    raster = store.raster_info(run.raster_id)["path"]
    say(f"note: searched run {run_id} only ({raster}, tiles {run.tile_size} px, embedder {run.embedder}), "
        f"the latest with captions; {store.path} also holds run{'s' if len(others) > 1 else ''} "
        f"{', '.join(map(str, others))}: search one with --run N (`tilescribe info --db {store.path}` lists them).")
