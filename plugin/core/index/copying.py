"""`tilescribe copy`: an index copied between backends (file <-> PostgreSQL, or file -> file, pg -> pg).

Everything is written through the destination's Store methods (the same writes indexing makes), so
each backend's own rules hold: vectors land in its vector table and its HNSW index or vec0 table,
words in its full-text index, and a PostgreSQL tile another indexer holds a live claim on is left to
it. Reading the source a page at a time, and the few columns no Store method writes (a run's times,
a failed tile's attempts), are this module's SQL (copy_sql.py), its one owner.

Ids are never copied: they are the destination's own. What ties rows together is what identifies
them in any index: a raster by path and fingerprint, an embedder by name, dimension and probe
vectors, a run by its raster, embedder and settings (the n-th source run with given settings is the
n-th such run of the destination), a tile by its window key, a caption by its tile and variant.

Idempotent and resumable: a tile the destination already holds in the source's state or further
(done beats failed beats pending) is left alone, and each batch of tiles is one transaction, so a
copy that was killed is run again and completes, adding nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..captions import CaptionVariant
from ..errors import IndexFileError
from ..raster.tiling import RasterInfo, Tile, Window
from . import copy_sql
from .embedder_identity import UNCHECKED, same_model
from .store_reads import RunInfo
from .store_writes import TileCaptions

log = logging.getLogger(__name__)

DEFAULT_BATCH = 500  # tiles per transaction: ~2,500 vectors, a second or two per batch on either backend
# How far along a tile is: the destination keeps its own state unless the source's is further.
_PROGRESS = {"pending": 0, "failed": 1, "skipped": 2, "done": 3}


@dataclass
class CopyReport:
    """What one copy did; all zero but `unchanged` when the destination already held everything."""

    runs_created: int = 0
    tiles_added: int = 0
    tiles_captioned: int = 0  # tiles whose captions and vectors were written
    tiles_marked: int = 0  # skipped or failed tiles whose state was written
    captions: int = 0
    unchanged: int = 0  # tiles the destination already held, as far along
    held_elsewhere: list[int] = field(default_factory=list)  # destination tiles a live indexer holds
    runs: dict[int, int] = field(default_factory=dict)  # source run id -> destination run id
    index_build_s: float = 0.0  # PostgreSQL: building HNSW indexes dropped for the load (postgres/bulk.py)

    @property
    def wrote_anything(self) -> bool:
        return bool(self.runs_created or self.tiles_added or self.tiles_captioned or self.tiles_marked)


Progress = Callable[[int, int, int], None]  # (source run id, tiles of it gone through, its tiles)


def copy_index(src, dst, *, batch: int = DEFAULT_BATCH, progress: Optional[Progress] = None,
               index_memory: Optional[str] = None) -> CopyReport:
    """Copy every raster, embedder, run, tile, caption and vector of `src` into `dst` (open Stores).

    index_memory: PostgreSQL's maintenance_work_mem for building HNSW indexes after a bulk load
    (default postgres/bulk.py's BUILD_MEMORY).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    report = CopyReport()
    embedders: dict[int, int] = {}
    with dst.indexer_lock():  # a file: refused while an indexer writes it; PostgreSQL: claims keep them apart
        runs = src.runs()
        for run in runs:
            if run.embedder_id not in embedders:
                embedders[run.embedder_id] = _embedder_in(src, dst, run.embedder_id)
        if dst.backend == "postgres":
            _defer_vector_indexes(src, dst, runs, embedders)
        taken: Counter = Counter()
        for run in runs:
            target = _run_in(src, dst, run, embedders[run.embedder_id], taken, report)
            report.runs[run.id] = target
            _copy_tiles(src, dst, run, target, batch, report, progress)
            _copy_run_state(src, dst, run, target)
        if dst.backend == "postgres":
            from .postgres import bulk

            built = [bulk.ensure_vector_index(dst, embedder_id, index_memory or bulk.BUILD_MEMORY)
                     for embedder_id in sorted(set(embedders.values()))]
            report.index_build_s = round(sum(s for s in built if s is not None), 2)
    return report


def _defer_vector_indexes(src, dst, runs: list, embedders: dict[int, int]) -> None:
    """Many vectors into an empty PostgreSQL vector table: its HNSW index is built once at the end (bulk.py)."""
    from .postgres import bulk

    coming: Counter = Counter()
    for run in runs:
        coming[embedders[run.embedder_id]] += src.variant_count(run.id)
    for embedder_id, count in coming.items():
        if count >= bulk.BULK_MIN_VECTORS and not bulk.vectors_in(dst, embedder_id):
            log.info("%s: %s vectors into an empty table; its HNSW index is built after the load", dst.path, count)
            bulk.drop_vector_index(dst, embedder_id)


# -- embedders and runs -------------------------------------------------------------------------


def _embedder_in(src, dst, embedder_id: int) -> int:
    """The destination's embedder computing what the source's did, recorded there when missing."""
    name, dim, probe = src.embedder_record(embedder_id)
    for _, other_name, other_dim in copy_sql.embedders(dst):
        if other_name == name and other_dim != dim:
            raise IndexFileError(
                f"{dst.path} holds vectors of the embedder {name} as {other_dim}-d, and {src.path} as {dim}-d: "
                f"they were made by different models under one name and cannot share an index. Copy into "
                "another index (a new file, or another ?schema=), or re-index one of them with the other's model.")
    candidates = dst.embedders_of_dim(dim)
    if probe and probe != UNCHECKED:  # told by what it computes, whatever its name
        for other_id, _, other_probe in candidates:
            if other_probe and other_probe != UNCHECKED and same_model(probe, other_probe):
                return other_id
    for other_id, other_name, other_probe in candidates:
        if other_name != name:
            continue
        if probe and other_probe and UNCHECKED not in (probe, other_probe) and not same_model(probe, other_probe):
            raise IndexFileError(
                f"The embedder {name} ({dim}-d) of {dst.path} computes other vectors than the one of the same name "
                f"in {src.path} (their probe sentences disagree): the two indexes were made with different "
                "models. Copy into another index (a new file, or another ?schema=).")
        if probe is not None and other_probe is None:
            dst.set_embedder_probe(other_id, probe)
        return other_id
    new_id = dst.embedder_id(name, dim)
    if probe is not None:
        dst.set_embedder_probe(new_id, probe)
    return new_id


def _signature(raster: dict, run: RunInfo, embedder_id: int) -> tuple:
    """What makes two runs (in two indexes) the same run: raster, embedder and settings."""
    return (raster["path"], raster["fingerprint"], embedder_id, repr(sorted(run.captioner.items())),
            run.prompt_version, run.tile_size, run.overlap, run.variants)


def _run_in(src, dst, run: RunInfo, embedder_id: int, taken: Counter, report: CopyReport) -> int:
    """The destination run matching `run` (the n-th of its signature), created when missing."""
    raster = src.raster_info(run.raster_id)
    with dst.run_choice_lock():
        raster_id = dst.upsert_raster(RasterInfo(
            raster["path"], raster["fingerprint"], raster["width"], raster["height"], raster["band_count"],
            raster["dtype"], raster["crs_wkt"], raster["crs_label"], tuple(raster["transform"]),
            source=json.dumps(raster["source"]) if raster.get("source") else ""))
        signature = _signature(raster, run, embedder_id)
        same = [other.id for other in dst.runs() if other.raster_id == raster_id
                and _signature(raster, other, other.embedder_id) == signature]
        taken[signature] += 1
        if len(same) >= taken[signature]:
            return same[taken[signature] - 1]
        new_id = dst.create_run(raster_id, embedder_id, run.captioner, run.prompt_version, run.tile_size,
                                run.overlap, run.variants, run.render)
        with dst.atomic():
            copy_sql.set_run_times(dst, new_id, run.started_at, None)
    report.runs_created += 1
    log.info("run %s of %s is run %s of %s", run.id, src.path, new_id, dst.path)
    return new_id


def _copy_run_state(src, dst, run: RunInfo, target: int) -> None:
    """Finished when the source run is, and what the raster looked like when it was last read."""
    mine = dst.run_info(target)
    if run.finished_at and not mine.finished_at:
        with dst.atomic():
            copy_sql.set_run_times(dst, target, None, run.finished_at)
    state = src.raster_state(run.id)
    if state and not dst.raster_state(target):
        dst.set_raster_state(target, state)


# -- tiles, captions, vectors ---------------------------------------------------------------------


def _copy_tiles(src, dst, run: RunInfo, target: int, batch: int, report: CopyReport,
                progress: Optional[Progress]) -> None:
    total = sum(src.tile_counts(run.id).values())
    reader = src.vector_reader(run) if src.variant_count(run.id) else None
    after, seen = 0, 0
    while True:
        page = copy_sql.tile_page(src, run.id, after, batch)
        if not page:
            return
        after = page[-1].id
        seen += len(page)
        _copy_page(src, dst, run, reader, target, page, report)
        if progress:
            progress(run.id, seen, total)


def _copy_page(src, dst, run: RunInfo, reader, target: int, page: list, report: CopyReport) -> None:
    """One batch of the source's tiles into the destination run, in one transaction."""
    with dst.atomic():
        states = copy_sql.tile_states(dst, target, [tile.key for tile in page])
        new = [tile for tile in page if tile.key not in states]
        dst.add_tiles(target, [Tile(Window(*tile.window), tile.bbox,
                                    tile.reason if tile.status == "skipped" else "") for tile in new])
        if new:
            states.update(copy_sql.tile_states(dst, target, [tile.key for tile in new]))
        report.tiles_added += len(new)
        behind = [tile for tile in page if _PROGRESS[tile.status] > _PROGRESS[states[tile.key][1]]]
        touched = {tile.key for tile in new} | {tile.key for tile in behind}
        report.unchanged += sum(1 for tile in page if tile.key not in touched)
        done = [tile for tile in behind if tile.status == "done"]
        entries = _captions_of(src, run, reader, done, states)
        for tile in behind:
            if tile.status == "done" and states[tile.key][0] in entries:
                continue
            # skipped, failed, or (a damaged source) done without captions: the state, the reason, the answer
            dst.mark_tile(states[tile.key][0], tile.status, tile.reason, tile.raw, tile.pixel_hash)
            if tile.status == "failed" and tile.attempts > 1:
                copy_sql.set_attempts(dst, states[tile.key][0], tile.attempts)
            report.tiles_marked += 1
        # PostgreSQL returns the tiles a live indexer claimed meanwhile: they stay its own (a file: None)
        lost = set(dst.save_captions_many(list(entries.values())) or ()) if entries else set()
        report.held_elsewhere.extend(sorted(lost))
        report.tiles_captioned += len(entries) - len(lost)
        report.captions += sum(len(e.variants) for tile_id, e in entries.items() if tile_id not in lost)


def _captions_of(src, run: RunInfo, reader, tiles: list, states: dict) -> dict[int, TileCaptions]:
    """destination tile id -> the source tile's variants with their vectors, in variant order."""
    if not tiles:
        return {}
    rows = copy_sql.captions_of(src, [tile.id for tile in tiles])
    by_tile: dict[int, list] = defaultdict(list)
    for caption_id, tile_id, one_sentence, feature, caption in rows:
        by_tile[tile_id].append((caption_id, CaptionVariant(one_sentence, feature, caption)))
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    found, vectors = reader.read(ids) if len(ids) else (ids, np.zeros((0, run.dim), np.float32))
    if len(found) != len(ids):
        missing = sorted(set(ids.tolist()) - set(found.tolist()))[:5]
        raise IndexFileError(
            f"{src.path} lacks the vectors of captions {missing} (run {run.id}): it is damaged. Run `tilescribe "
            f"check --db {src.path}`; nothing of this batch was copied.")
    row_of = {int(caption_id): at for at, caption_id in enumerate(found.tolist())}
    entries = {}
    for tile in tiles:
        variants = by_tile.get(tile.id)
        if not variants:
            continue
        entries[states[tile.key][0]] = TileCaptions(
            states[tile.key][0], [variant for _, variant in variants],
            vectors[[row_of[caption_id] for caption_id, _ in variants]], tile.raw, tile.pixel_hash)
    return entries
