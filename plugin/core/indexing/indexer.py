"""Index a raster: tiles -> rendered PNG -> caption variants -> embeddings -> store, resumable."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterator, Optional, Sequence

from ..captioning.base import CaptionResult
from .changes import requeue_changed_tiles
from ..index.embedder_identity import resolve_embedder
from ..embedding import Embedder
from ..errors import CaptionError, IndexingError, TileScribeError
from .index_settings import IndexSettings
from ..index.health import check_after_crash
from ..raster.rendering import choose_bands, read_palette, render_identity, render_tile_png
from ..index.store import RunInfo, StoredTile, TileCaptions
from ..index.opening import AnyStore
from ..raster.tiling import (Tile, TileGrid, content_skip_reason, gdal_errors_as_exceptions,
                     open_raster, pixel_hash, read_info, read_window)

REGISTER_BATCH = 10_000  # tiles per transaction while a grid is registered: memory stays flat
TODO_PAGE = 1_000  # tiles read from the index at a time while indexing
# Runs that may try a tile before it is left failed with its reason (--retry-failed forces more).
MAX_TILE_ATTEMPTS = 3
# Unexpected errors (not a bad answer: a crash inside the engine) on this many tiles in a
# row mean the engine is broken, not the tiles: stop instead of failing the whole raster.
CONSECUTIVE_CRASH_LIMIT = 5


@dataclass
class Timings:
    """Seconds spent per stage, summed over tiles: what the benchmark reports."""

    read: float = 0.0
    render: float = 0.0
    model: float = 0.0
    embed: float = 0.0
    store: float = 0.0
    completion_tokens: int = 0

    def outside_model(self) -> float:
        return self.read + self.render + self.embed + self.store


@dataclass
class IndexProgress:
    run_id: int
    total: int
    done: int
    skipped: int
    failed: int
    captioned_now: int
    elapsed_s: float
    last_tile: str = ""

    @property
    def finished(self) -> int:
        return self.done + self.skipped + self.failed

    @property
    def tiles_per_s(self) -> float:
        return self.captioned_now / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> Optional[float]:
        rate = self.tiles_per_s
        return (self.total - self.finished) / rate if rate > 0 else None


@dataclass
class IndexReport:
    run_id: int
    progress: IndexProgress
    cancelled: bool
    timings: Timings = field(default_factory=Timings)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (tile key, reason)
    warnings: tuple[str, ...] = ()  # about the raster (no CRS, rotated): worth showing the user


ProgressCallback = Callable[[IndexProgress], None]
CancelCheck = Callable[[], bool]


def index_raster(store: AnyStore, captioner, embedder: Embedder, raster_path: str,
                 settings: IndexSettings = IndexSettings(), *,  # noqa: B008 (frozen)
                 progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelCheck] = None) -> IndexReport:
    """Caption every pending tile of the raster's run; safe to kill and run again."""
    try:
        with gdal_errors_as_exceptions(), store.indexer_lock() as lock, open_raster(raster_path) as dataset:
            info = read_info(dataset)
            grid = TileGrid(info.width, info.height, settings.tile_size, settings.overlap)
            bands = list(choose_bands(dataset.colorinterp, dataset.count, settings.render.bands))
            palette = read_palette(dataset, bands)
            render = render_identity(settings.render, bands, palette)
            with store.run_choice_lock():  # PostgreSQL: indexers starting together share one run
                run_id = _run_for(store, captioner, embedder, info, grid, settings.variants, render)
            register_grid(store, run_id, info, grid)
            if lock.previous_holder_died:
                check_after_crash(store, run_id)  # cheap checks: counts and a few known searches
            notes = grid.notes() + requeue_changed_tiles(store, run_id, dataset, bands, info)
            job = _IndexJob(store, captioner, embedder, run_id, settings, progress, cancel or (lambda: False))
            job.palette = palette
            report = job.run(dataset, bands)
    except sqlite3.Error as exc:
        failure = store.write_failure(exc)
        if failure is None:
            raise  # not about the file or the disk: a bug, keep its traceback
        raise failure from exc
    report.warnings = info.warnings + notes
    return report


def register_grid(store: AnyStore, run_id: int, info, grid: TileGrid) -> None:
    """Record every tile of the grid as pending, REGISTER_BATCH at a time.

    Never the whole grid in memory (a 1,000,000 px square raster has millions of tiles).
    Each batch is its own transaction: a run killed half-way through registering is
    completed here next time (tiles already known stay as they are).
    """
    if sum(store.tile_counts(run_id).values()) >= len(grid):
        return
    windows = grid.windows()
    while batch := [Tile(w, info.bbox(w)) for w in islice(windows, REGISTER_BATCH)]:
        store.add_tiles(run_id, batch)


def tiles_to_do(store: AnyStore, run_id: int, statuses: Sequence[str],
                max_attempts: Optional[int] = None) -> Iterator[StoredTile]:
    """The run's tiles in these states in id order, read TODO_PAGE at a time (Store.tiles reads them all).

    Failed tiles already tried `max_attempts` times are left alone (None: all of them).
    """
    last = 0
    while page := store.tiles_to_do(run_id, statuses, last, TODO_PAGE, max_attempts):
        yield from page
        last = page[-1].id


# Settings that change how fast captions come, not what they say: a resumed run may
# use other values (more threads, more requests in flight) and still continue.
OPERATIONAL_SETTINGS = frozenset({
    "parallel_requests", "timeout_s", "max_retries", "backoff_s", "max_attempts",
    "n_threads", "n_gpu_layers", "n_ctx", "n_ctx_setting", "max_tokens", "response_format",
    "llama_cpp_version", "llama_server_build", "family_setting", "slots", "endpoints",
    # Which and how many servers answer (their model name stays part of the identity).
    "url", "endpoint", "api_key_env",
})


def captioner_identity(record: dict) -> dict:
    """The part of a captioner's run record that decides which captions it writes."""
    identity = {k: v for k, v in record.items() if k not in OPERATIONAL_SETTINGS}
    if isinstance(record.get("settings"), dict):
        identity["settings"] = {k: v for k, v in record["settings"].items() if k not in OPERATIONAL_SETTINGS}
    return identity


def _run_for(store: AnyStore, captioner, embedder: Embedder, info, grid: TileGrid, variants: int,
             render: dict) -> int:
    """The run to continue (same raster, embedder, captioner identity, prompt, grid and rendering), or a new one."""
    from ..captioning.prompt import PROMPT_VERSION

    raster_id = store.upsert_raster(info)
    embedder_id = resolve_embedder(store, embedder)  # by what it computes: refuses a look-alike
    record = captioner.describe()
    wanted = captioner_identity(record)
    for run in reversed(store.runs()):
        if (run.raster_id, run.embedder_id, run.prompt_version, run.tile_size,
                run.overlap, run.variants) == (raster_id, embedder_id, PROMPT_VERSION,
                                                     grid.tile_size, grid.overlap, variants) \
                and captioner_identity(run.captioner) == wanted and _same_render(store, run, render):
            return run.id
    return store.create_run(raster_id, embedder_id, record, PROMPT_VERSION, grid.tile_size,
                            grid.overlap, variants, render)


def _same_render(store: AnyStore, run: RunInfo, render: dict) -> bool:
    """Whether the run's tiles were rendered as `render` would; a run from before renders were
    recorded is taken to match and adopts it (unless it showed a colour table, which it could not)."""
    if run.render is not None:
        return run.render == render
    if render["palette"]:
        return False
    store.set_run_render(run.id, render)
    return True


class _IndexJob:
    """One pass over the pending tiles of a run."""

    def __init__(self, store, captioner, embedder, run_id, settings, progress, cancel):
        self.store, self.captioner, self.embedder = store, captioner, embedder
        self.run_id, self.settings = run_id, settings
        self.on_progress, self.cancel = progress, cancel
        self.timings = Timings()
        self.failures: list[tuple[str, str]] = []
        self.started = time.perf_counter()
        self.captioned_now = 0
        self.cancelled = False
        self.crashes_in_a_row = 0
        self.stop_error: Optional[Exception] = None  # set when the engine is gone: the run ends
        self.counts = store.tile_counts(run_id)  # kept in step in memory: no query per tile
        self.palette = None  # colour table of a paletted raster (rendering.read_palette)
        self.hashes: dict[int, str] = {}  # tile id -> pixel checksum, stored with its captions

    def _moved(self, tile: StoredTile, status: str) -> None:
        self.counts[tile.status] -= 1
        self.counts[status] += 1
        self._report(tile)

    def run(self, dataset, bands) -> IndexReport:
        todo = tiles_to_do(self.store, self.run_id, ("pending", "failed"),
                           None if self.settings.retry_failed else MAX_TILE_ATTEMPTS)
        batch: list[tuple[StoredTile, CaptionResult]] = []
        parallel = max(1, int(getattr(self.captioner, "parallel_requests", 1)))
        try:
            for tile, outcome in _caption_stream(self.captioner, self._jobs(dataset, bands, todo),
                                                 self.settings.variants, parallel):
                if _stops_run(outcome):
                    # No new tiles start; answers still in flight are kept. This tile stays pending.
                    self.stop_error = self.stop_error or outcome
                elif isinstance(outcome, Exception):
                    self._fail(tile, outcome)
                else:
                    self.crashes_in_a_row = 0
                    batch.append((tile, outcome))
                    if len(batch) >= parallel:
                        self._flush(batch)
        finally:
            self._flush(batch)  # what was captioned is kept, whatever stopped us
        if self.stop_error is not None:
            raise self.stop_error
        # Asked, not counted: on PostgreSQL other indexers finish tiles of the run too.
        if not self.cancelled and not self.store.tile_counts(self.run_id)["pending"]:
            self.store.finish_run(self.run_id)
        return IndexReport(self.run_id, self._progress(""), self.cancelled, self.timings, self.failures)

    def _jobs(self, dataset, bands, todo) -> Iterator[tuple[StoredTile, bytes]]:
        """Rendered tiles to caption; empty tiles are marked skipped and never sent to the model."""
        for tile in todo:
            if self.stop_error is not None:
                return
            if self.cancel():
                self.cancelled = True
                return
            t0 = time.perf_counter()
            data = read_window(dataset, tile.window, bands)
            t1 = time.perf_counter()
            self.timings.read += t1 - t0
            self.hashes[tile.id] = pixel_hash(data)
            reason = content_skip_reason(data)
            if reason:
                self.store.mark_tile(tile.id, "skipped", reason, pixel_hash=self.hashes.pop(tile.id))
                self._moved(tile, "skipped")
                continue
            png = render_tile_png(data, self.settings.render, self.palette)
            self.timings.render += time.perf_counter() - t1
            yield tile, png

    def _flush(self, pending: list) -> None:
        # Taken out first: a batch is written once, even when the write or a progress callback fails.
        batch = list(pending)
        pending.clear()
        if not batch:
            return
        t0 = time.perf_counter()
        texts = [v.embedding_text() for _, result in batch for v in result.variants]
        vectors = self.embedder.embed(texts)
        t1 = time.perf_counter()
        entries, offset = [], 0
        for tile, result in batch:
            count = len(result.variants)
            entries.append(TileCaptions(tile.id, result.variants, vectors[offset:offset + count], result.raw,
                                        self.hashes.pop(tile.id, None)))
            offset += count
        # These tiles' captions, vectors and checksums, all or nothing. PostgreSQL leaves out (and
        # names) tiles another indexer claimed after our lease lapsed: theirs are stored instead.
        lost = set(self.store.save_captions_many(entries) or ())
        self.timings.embed += t1 - t0
        self.timings.store += time.perf_counter() - t1
        for tile, result in batch:
            self.timings.model += result.seconds
            self.timings.completion_tokens += result.completion_tokens
            self.captioned_now += tile.id not in lost
            self._moved(tile, "done")

    def _fail(self, tile: StoredTile, error: Exception) -> None:
        """Record the failure on the tile (reason, one more attempt); the run goes on."""
        crashed = not isinstance(error, CaptionError)
        reason = f"the captioner crashed on this tile: {error!r}" if crashed else str(error)
        self.hashes.pop(tile.id, None)
        self.store.mark_tile(tile.id, "failed", reason)
        self.failures.append((tile.window.key, reason))
        self._moved(tile, "failed")
        self.crashes_in_a_row = self.crashes_in_a_row + 1 if crashed else 0
        if self.crashes_in_a_row >= CONSECUTIVE_CRASH_LIMIT and self.stop_error is None:
            self.stop_error = IndexingError(
                f"The captioner crashed on {self.crashes_in_a_row} tiles in a row (last: {error!r}): "
                "the model or engine is broken, not the tiles. Indexed tiles are kept and the failed "
                "ones are retried next time; check the model files and settings.")

    def _progress(self, last_tile: str) -> IndexProgress:
        counts = self.counts
        return IndexProgress(self.run_id, sum(counts.values()), counts["done"], counts["skipped"],
                             counts["failed"], self.captioned_now, time.perf_counter() - self.started,
                             last_tile)

    def _report(self, tile: StoredTile) -> None:
        if self.on_progress:
            self.on_progress(self._progress(tile.window.key))


def _caption_stream(captioner, jobs, n_variants: int, parallel: int):
    """(tile, CaptionResult | exception) in completion order, `parallel` model calls in flight."""
    if parallel == 1:
        for tile, png in jobs:
            yield tile, _caption_one(captioner, png, n_variants)
        return
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="caption") as pool:
        in_flight: dict[Future, StoredTile] = {}
        jobs = iter(jobs)
        exhausted = False
        while in_flight or not exhausted:
            while not exhausted and len(in_flight) < parallel:
                try:
                    tile, png = next(jobs)
                except StopIteration:
                    exhausted = True
                    break
                in_flight[pool.submit(_caption_one, captioner, png, n_variants)] = tile
            if not in_flight:
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                yield in_flight.pop(future), future.result()


def _caption_one(captioner, png: bytes, n_variants: int):
    """The tile's CaptionResult or the exception it ended with (never raised: the caller sorts).

    Returned, not raised, so that answers of other tiles still in flight are saved.
    """
    try:
        return captioner.caption(png, n_variants)
    except Exception as exc:
        return exc


def _stops_run(outcome) -> bool:
    """ModelError (bad settings; EngineError: the engine is gone) and other TileScribeErrors
    end the run; a CaptionError or an unexpected crash belongs to the one tile."""
    return isinstance(outcome, TileScribeError) and not isinstance(outcome, CaptionError)
