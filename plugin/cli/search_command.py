"""`tilescribe search`: rank the tiles of an index for a text query."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import TileScribeError
from ..core.index import INDEX_SUFFIX
from ..core.index.opening import AnyStore, open_index
from ..core.index.target import is_server_index
from ..core.search.export import hits_to_geojson, hits_to_json, hits_to_text
from ..core.search.project import index_files, search_project
from ..core.search.search import SearchRequest, check_extent, check_query, search
from .common import add_embedder_argument, index_writable, load_embedder, say
from .output_guard import refuse_output_over_index

FORMATTERS = {"text": hits_to_text, "json": hits_to_json, "geojson": hits_to_geojson}


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search an index with a text query")
    # Optional to argparse only: `--db A B "query"` hands the query to --db, which gives it back (run()).
    parser.add_argument("query", nargs="?", help='what to find, e.g. "a freeway interchange"')
    parser.add_argument("--db", required=True, nargs="+", action="extend", metavar="INDEX",
                        help="index file (*.tilescribe.sqlite) or PostgreSQL index (postgresql://... or "
                             "service=NAME, docs/postgres.md); several indexes or folders (every "
                             "*.tilescribe.sqlite inside) are searched together, in one ranking")
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
    parser.add_argument("--extent-crs", default=None, metavar="CRS",
                        help="CRS of --extent (e.g. EPSG:4326), transformed to each raster's CRS "
                             "(default: each raster's own CRS)")
    parser.add_argument("--all-rasters", action="store_true",
                        help="with one index file holding several rasters: search the latest run of each "
                             "in one ranking (several files or a folder always do)")
    parser.add_argument("--skip-other-embedders", action="store_true",
                        help="with several indexes: leave out those made with another embedding model "
                             "(default: refuse to search, naming them)")
    parser.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.query is None:
        if len(args.db) < 2:
            from ..core.errors import QueryError

            raise QueryError('Give the query after the index files, e.g. tilescribe search --db A.sqlite '
                             '"a bridge over a river".')
        args.query = args.db.pop()  # --db took every word up to the end, the query included
    check_query(args.query, args.k)  # before loading a model, so bad input fails fast
    extent = check_extent(args.extent)
    if len(args.db) == 1 and is_server_index(args.db[0]) and not args.all_rasters:
        args.db = args.db[0]  # a PostgreSQL index: one, as a file
        return _run_one(args, extent)
    for given in args.db:  # never write the results over one of the indexes (or a folder's)
        if is_server_index(given):
            continue
        inside = sorted(Path(given).glob(f"*{INDEX_SUFFIX}")) if Path(given).is_dir() else [given]
        for index in inside:
            refuse_output_over_index(args.output, index)
    if len(args.db) == 1 and not Path(args.db[0]).is_dir() and not args.all_rasters:
        args.db = args.db[0]  # one file: searched as before (main's error messages name it)
        return _run_one(args, extent)
    return _run_many(args, index_files(args.db), extent)


def _run_many(args, files, extent) -> int:
    given = list(args.db)  # as typed: an index found in a folder is left out when damaged, a named one refused
    from ..core.errors import QueryError

    if args.run is not None:
        raise QueryError("--run picks a run of one index file; several indexes (or --all-rasters) are each "
                         "searched at the latest run of each raster. Give one --db to search a run.")
    args.db = None  # several files: their errors name the file themselves
    embedder = load_embedder(args.embedder)
    result = search_project(given, embedder, SearchRequest(args.query, args.k, None, extent, lexical=args.lexical),
                            other_embedders="skip" if args.skip_other_embedders else "refuse",
                            extent_crs=args.extent_crs)
    for line in result.skipped:
        say(f"note: {line}")
    kind = "indexes" if any(is_server_index(f) for f in files) else "index file(s)"
    say(f"searched {len(result.searched)} run(s) in {len(files)} {kind}")
    _write(args, _many_text(args.format, result.hits), len(result.hits))
    return 0


def _many_text(form: str, hits) -> str:
    """As for one index; the text table also names each hit's raster, GeoJSON over several CRSs
    drops the collection's CRS (each feature's `crs` property says its own)."""
    if form == "text" and hits:
        return "\n".join(f"{line}  [{Path(hit.raster_path).name}]"
                         for line, hit in zip(hits_to_text(hits).splitlines(), hits))
    text = FORMATTERS[form](hits)
    if form == "geojson" and len({hit.crs for hit in hits}) > 1:
        import json

        collection = json.loads(text)
        collection.pop("crs", None)
        say("note: the hits are in several CRSs: each feature's crs property names its own")
        text = json.dumps(collection, indent=2, ensure_ascii=False)
    return text


def _run_one(args, extent) -> int:
    if args.extent_crs and extent is not None:
        from ..core.errors import QueryError

        raise QueryError("--extent-crs is for several indexes (or --all-rasters); with one index give "
                         "--extent in its raster's CRS.")
    # Searching writes nothing; opened writable when it can be, an older index is upgraded on the way.
    readonly = is_server_index(args.db) or not index_writable(Path(args.db))
    with open_index(args.db, readonly=readonly) as store:
        embedder = load_embedder(args.embedder)
        hits = search(store, embedder, SearchRequest(args.query, args.k, args.run, extent, lexical=args.lexical))
        if args.run is None and hits:
            _say_which_run(store, hits[0].run_id)
    _write(args, FORMATTERS[args.format](hits), len(hits))
    return 0


def _write(args, text: str, count: int) -> None:
    if args.output:
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise TileScribeError(f"Cannot write the results to {args.output}: {exc.strerror}. "
                                  "Give --output a file in a folder you can write.") from exc
        say(f"wrote {count} results to {args.output}")
    else:
        print(text)


def _say_which_run(store: AnyStore, run_id: int) -> None:
    """With several searchable runs (rasters, settings) in one file, name the one searched."""
    others = [r for r in store.searchable_runs() if r != run_id]
    if not others:
        return
    run = store.run_info(run_id)
    raster = store.raster_info(run.raster_id)["path"]
    say(f"note: searched run {run_id} only ({raster}, tiles {run.tile_size} px, embedder {run.embedder}), "
        f"the latest with captions; {store.path} also holds run{'s' if len(others) > 1 else ''} "
        f"{', '.join(map(str, others))}: search one with --run N (`tilescribe info --db {store.path}` lists them).")
