"""What an index holds, as plain data: rasters, runs, tiles by status, variants, vectors."""

from __future__ import annotations

from .opening import AnyStore


def index_summary(store: AnyStore) -> dict:
    runs = []
    for run in store.runs():
        entry = dict(run.to_dict(), tiles=store.tile_counts(run.id), variants_stored=store.variant_count(run.id),
                     vectors=store.vector_count(run.id))
        workers = store.workers(run.id)  # PostgreSQL: who is indexing it (None for a file: one indexer)
        if workers is not None:
            entry["workers"] = workers
        runs.append(entry)
    keys = ("id", "path", "width", "height", "band_count", "dtype", "crs_label", "crs_wkt")
    rasters = [{k: r[k] for k in keys} for r in store.rasters()]
    return {"index": str(store.path), "rasters": rasters, "runs": runs}


def run_choices(store: AnyStore) -> list[dict]:
    """The runs a user can search, newest first, from what the index maintains (no vector scan).

    `vectors` is runs.vector_count; `tiles_done` counts captioned tiles on the (run_id, status) index.
    """
    rasters = {r["id"]: r for r in store.rasters()}
    choices = []
    for run in reversed(store.runs()):
        raster = rasters.get(run.raster_id, {})
        done = store.tile_counts(run.id)["done"]
        choices.append({
            "id": run.id, "captioner": run.captioner, "embedder": run.embedder,
            "tile_size": run.tile_size, "overlap": run.overlap, "variants": run.variants,
            "started_at": run.started_at, "finished_at": run.finished_at, "tiles_done": done,
            "vectors": store.vector_state(run.id)[0], "raster": raster.get("path", ""),
            "crs_wkt": raster.get("crs_wkt", ""),
        })
    return choices
