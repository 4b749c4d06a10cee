"""`tilescribe bench-search`: exact vs fast search on a synthetic index of N vectors (and real captions)."""

from __future__ import annotations

from pathlib import Path

from ...plugin.core.errors import TileScribeError
from .bench_output import print_report
from ...plugin.cli.common import add_embedder_argument, load_embedder, positive_int, say
from ...plugin.cli.copy_command import memory_size

WORKER_QUERIES = ("a dam next to a plantation", "a bridge over a river", "houses along a road",
                  "a freeway interchange", "boats in a harbour", "a runway with planes",
                  "green farmland with square fields", "a dense forest", "a beach with waves",
                  "a parking lot full of cars")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench-search", help="measure exact vs fast search latency and recall",
        description="Builds a synthetic index of N caption vectors (5 per tile, clustered like real "
                    "all-MiniLM-L6-v2 captions; see devtools/bench/synthetic.py) in a temporary file with "
                    "the project's store, then times exact and fast search on the same queries and "
                    "reports the fast path's recall@k against exact.")
    parser.add_argument("--vectors", type=positive_int, required=True, help="caption vectors in the index")
    parser.add_argument("--dim", type=positive_int, default=384, help="vector size (default 384)")
    parser.add_argument("--queries", type=positive_int, default=100, help="queries timed (default 100)")
    parser.add_argument("-k", type=positive_int, default=10, help="tiles per query (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-captions", type=Path, default=None, metavar="FILE",
                        help="also measure recall on real embeddings of these captions (5 lines per image, "
                             "e.g. ../shared/data/captions/rsicd_test/test_caps.txt)")
    parser.add_argument("--worker", action="store_true",
                        help="also time text queries through a warm worker process (needs --dim 384)")
    add_embedder_argument(parser)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="postgres: also load the same vectors into PostgreSQL and time pgvector's HNSW search "
                             "beside the SQLite fast path (recall against the file's exact search)")
    parser.add_argument("--pg", default=None, metavar="URL",
                        help="with --backend postgres: the database to use (postgresql://...; its schema "
                             "bench_<vectors>_<dim>_<seed> is kept and reused); default: a throwaway cluster")
    parser.add_argument("--build-memory", default="2GB", type=memory_size,
                        help="with --backend postgres: maintenance_work_mem for the HNSW build (default 2GB)")
    parser.add_argument("--tmp-dir", default=None, help="folder for the temporary index (default: system temp)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..bench.search_bench import bench_real, bench_synthetic

    if args.real_captions and not args.real_captions.is_file():
        raise TileScribeError(f"Captions file not found: {args.real_captions}.")
    if args.worker and args.dim != 384:
        raise TileScribeError("--worker searches with all-MiniLM-L6-v2: use --dim 384.")
    if args.backend == "postgres":
        if args.real_captions or args.worker:
            raise TileScribeError("--backend postgres measures synthetic vectors only: leave out --real-captions "
                                  "and --worker.")
        from ..bench.pg_search_bench import bench_postgres

        print_report(bench_postgres(args.vectors, dim=args.dim, queries=args.queries, k=args.k, seed=args.seed,
                                    folder=args.tmp_dir, pg=args.pg, build_memory=args.build_memory, progress=say),
                     args.format)
        return 0
    texts = [WORKER_QUERIES[i % len(WORKER_QUERIES)] for i in range(args.queries)] if args.worker else ()
    result = bench_synthetic(args.vectors, dim=args.dim, queries=args.queries, k=args.k, seed=args.seed,
                             folder=args.tmp_dir, worker_texts=texts,
                             progress=lambda n: say(f"  {n:,} of {args.vectors:,} vectors written"))
    if args.real_captions:
        say(f"embedding {args.real_captions} ...")
        result["real"] = bench_real(args.real_captions, load_embedder(args.embedder), queries=args.queries,
                                    k=args.k, seed=args.seed, folder=args.tmp_dir)
    print_report(result, args.format)
    return 0

