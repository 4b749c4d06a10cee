"""`tilescribe info`: what an index holds (rasters, runs, tiles by status, variants, vectors)."""

from __future__ import annotations

from pathlib import Path

from ..core.index.health import wal_note
from ..core.index.opening import open_index
from ..core.index.summary import index_summary
from ..core.terminal_text import for_terminal, json_for_terminal
from .common import add_db_argument, say


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="show what an index file holds")
    add_db_argument(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def describe_captioner(record: dict) -> str:
    """A short name of what made a run's captions: the model file, server model, or source."""
    model = record.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    backend = record.get("backend", "?")
    if backend == "import":
        return f"imported from {record.get('file', '?')}"
    return f"{name} ({backend})" if name else backend


def describe_worker(worker: dict) -> str:
    """One indexer of a shared (PostgreSQL) index: its claimed tiles and lease, the tiles it stored."""
    text = f"{worker['indexer']}: {worker['done']} tiles stored"
    if worker["claimed"]:
        left = worker["lease_left_s"]
        lease = (f"lease expires in {left:g} s" if left >= 0 else
                 f"lease lapsed {-left:g} s ago: its tiles go back to the queue")
        text += f", captioning {worker['claimed']} now (claimed {worker['claim_age_s']:g} s ago, {lease})"
    return text


def run(args) -> int:
    with open_index(args.db, readonly=True) as store:
        summary = index_summary(store)
    summary["wal_note"] = wal_note(Path(store.path)) if store.backend == "sqlite" else ""
    if summary["wal_note"]:
        say(f"note: {summary['wal_note']}")
    if args.format == "json":
        print(json_for_terminal(summary, indent=2))
        return 0
    print(for_terminal(f"index {summary['index']}"))
    for raster in summary["rasters"]:
        print(for_terminal(f"raster {raster['id']}: {raster['path']} ({raster['width']}x{raster['height']}, "
                           f"{raster['band_count']} bands {raster['dtype']}, {raster['crs_label']})"))
    for run in summary["runs"]:
        tiles = ", ".join(f"{n} {status}" for status, n in run["tiles"].items())
        captioner = describe_captioner(run["captioner"])
        render = run.get("render")
        bands = f", bands {' '.join(map(str, render['bands']))}" if render else ""
        print(for_terminal(f"run {run['id']}: raster {run['raster_id']}, captioner {captioner}, "
                           f"prompt {run['prompt_version']}, embedder {run['embedder']} ({run['dim']}-d), "
                           f"tiles {run['tile_size']} px overlap {run['overlap']}{bands}: {tiles}; "
                           f"{run['variants_stored']} variants, {run['vectors']} vectors"))
        for worker in run.get("workers", ()):
            print(for_terminal(f"  indexer {describe_worker(worker)}"))
    if not summary["runs"]:
        print("no runs yet")
    return 0
