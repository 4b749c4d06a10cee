"""A raster edited in place: find the tiles whose pixels changed since they were captioned.

Chosen design (large orthophotos in mind): every tile's pixel checksum is computed from
the pixels the indexer reads anyway to render it, and stored with its captions. Each run
also records the size and modification time of every file the raster reads (a VRT's
sources too) and the fingerprint (first and last MiB). A later run compares them: a stat
per file and two MiB read when nothing changed, however large the raster. Only when the file did
change are the finished tiles' pixels read again (no model involved: reading is milliseconds per
tile, captioning seconds) and each checksum compared, and only the tiles that differ are captioned again. A sampled
hash alone would miss an edit between the samples; pixels alone would cost a full read
on every run. A file touched without a change costs one read pass and re-captions nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

from ..index.opening import AnyStore
from ..raster.tiling import RasterInfo, Window, pixel_hash, read_window

PAGE = 1_000  # tiles compared per transaction: a kill loses at most one page of comparisons


def raster_state(info: RasterInfo, dataset) -> str:
    """Size and mtime of every file the raster reads (a VRT's sources too), and its fingerprint.

    A VRT mosaic does not change when one of its source GeoTIFFs is edited: its sources'
    stats are part of the state. Thousands of sources cost milliseconds to stat, and the
    state stays one short digest.
    """
    digest = hashlib.sha256()
    files = sorted(set(getattr(dataset, "files", None) or [info.path]))
    for name in files:
        try:
            stat = os.stat(name)
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\0missing\n".encode())
    return json.dumps({"files": len(files), "stat": digest.hexdigest()[:32], "fingerprint": info.fingerprint},
                      sort_keys=True)


def requeue_changed_tiles(store: AnyStore, run_id: int, dataset, bands: Sequence[int],
                          info: RasterInfo) -> tuple[str, ...]:
    """Set the run's finished tiles whose pixels changed back to pending; a note saying so, if any.

    Their old captions stay searchable until the new ones replace them (nothing is lost if
    the run stops first). Tiles without a checksum (indexed before checksums were kept, or
    imported) get one now: later edits to them are then caught.
    """
    state = raster_state(info, dataset)
    seen = store.raster_state(run_id)
    if seen == state:
        return ()
    changed = total = 0
    if seen is not None:
        changed, total = _compare(store, run_id, dataset, bands)
    store.set_raster_state(run_id, state)
    if not changed:
        return ()
    return (f"{info.path} changed since run {run_id} captioned it: {changed} of {total} finished tiles "
            "have other pixels now and are captioned again",)


def _compare(store: AnyStore, run_id: int, dataset, bands: Sequence[int]) -> tuple[int, int]:
    changed = total = 0
    last = 0
    while rows := store.finished_tiles_page(run_id, last, PAGE):
        fresh = {row[0]: pixel_hash(read_window(dataset, Window(*row[1:5]), list(bands))) for row in rows}
        moved = [tile_id for tile_id, old in ((row[0], row[5]) for row in rows)
                 if old is not None and old != fresh[tile_id]]
        store.save_pixel_check(fresh, changed=moved)
        changed, total, last = changed + len(moved), total + len(rows), rows[-1][0]
    return changed, total

