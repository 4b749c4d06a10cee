"""What an index holds, as plain data: rasters, runs, tiles by status, variants, vectors."""

from __future__ import annotations

from .store import Store


def index_summary(store: Store) -> dict:
    runs = []
    for run in store.runs():
        run = dict(run)
        run["tiles"] = store.tile_counts(run["id"])
        run["variants_stored"] = store.variant_count(run["id"])
        run["vectors"] = store.vector_count(run["id"])
        runs.append(run)
    keys = ("id", "path", "width", "height", "band_count", "dtype", "crs_label", "crs_wkt")
    rasters = [{k: r[k] for k in keys} for r in store.rasters()]
    return {"index": str(store.path), "rasters": rasters, "runs": runs}
