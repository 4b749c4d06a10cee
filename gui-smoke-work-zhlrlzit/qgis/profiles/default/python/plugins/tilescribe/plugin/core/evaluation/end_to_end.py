"""End-to-end evaluation: caption a dataset's images with a VLM into a cached index, then score R@K."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..indexing.indexer import IndexProgress, IndexSettings, index_raster
from ..index.store import Store
from .datasets import CaptionDataset
from .end_to_end_plan import RasterJob
from .metrics import RetrievalRun, evaluate_scores
from .report import format_table, report_data

END_TO_END_LABEL = "end-to-end"
PLACEHOLDER_NOTE = (
    "PLACEHOLDER CAPTIONS: written by the tiny random-weight test model (--test-model); "
    "they are meaningless and so are these numbers. They only show that the pipeline runs."
)


@dataclass(frozen=True)
class EndToEndSettings:
    variants: int = 5
    captioner_label: str = "captioner"  # shown in the run name: model file, server model...
    placeholder: bool = False  # captions from the random-weight test model


@dataclass(frozen=True)
class EndToEndProgress:
    """Images (or mosaic tiles) finished out of the total, and how many the model captioned now."""

    finished: int
    total: int
    captioned_now: int
    elapsed_s: float

    @property
    def eta_s(self) -> Optional[float]:
        if self.finished >= self.total:
            return 0.0
        if not self.captioned_now:
            return None
        return (self.total - self.finished) * self.elapsed_s / self.captioned_now


@dataclass
class CaptionedGallery:
    """The stored tile of each dataset row (None: no captions), and what captioning cost."""

    tile_ids: list[Optional[int]]
    captioned_now: int = 0
    seconds: float = 0.0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (item id, why no captions)

    @property
    def from_cache(self) -> int:
        return sum(tile is not None for tile in self.tile_ids) - self.captioned_now


@dataclass
class EndToEndResult:
    dataset: CaptionDataset
    run: RetrievalRun
    db: Path
    gallery: CaptionedGallery
    settings: EndToEndSettings


# -- captioning into the cache ----------------------------------------------------------------

class _Tracker:
    """Turns the indexer's per-tile progress into images finished out of the dataset's total."""

    def __init__(self, total: int, progress: Optional[Callable[[EndToEndProgress], None]]):
        self.total, self.progress = total, progress
        self.finished = self.captioned_before = self.captioned_in_job = 0
        self.started = time.perf_counter()

    def tile(self, job: RasterJob, p: IndexProgress) -> None:
        self.finished += p.last_tile in job.rows
        self.captioned_in_job = p.captioned_now
        self.emit()

    def job_done(self, job: RasterJob, finished_before: int, captioned_now: int) -> None:
        self.finished = finished_before + len(job.rows)
        self.captioned_before += captioned_now
        self.captioned_in_job = 0
        self.emit()

    def emit(self) -> None:
        if self.progress:
            self.progress(EndToEndProgress(self.finished, self.total,
                                           self.captioned_before + self.captioned_in_job,
                                           time.perf_counter() - self.started))


class _StopWhenCovered:
    """Ends an index pass over a mosaic once every tile the evaluation needs has been tried.

    The run is known from the first progress event; its dataset tiles still pending then
    are the ones to wait for (at most one tile outside the dataset is captioned first).
    """

    def __init__(self, store: Store, job: RasterJob):
        self.store, self.job, self.left = store, job, None

    def seen(self, p: IndexProgress) -> None:
        if self.left is None:
            self.left = {t.window.key for t in self.store.tiles(p.run_id)
                         if t.status in ("pending", "failed") and t.window.key in self.job.rows}
        self.left.discard(p.last_tile)

    def __call__(self) -> bool:
        return self.left is not None and not self.left


def caption_gallery(store: Store, captioner, embedder, dataset: CaptionDataset,
                    jobs: Sequence[RasterJob], variants: int, progress=None) -> CaptionedGallery:
    """Index every job (resuming: tiles already captioned with this model are not captioned again)."""
    gallery = CaptionedGallery([None] * len(dataset))
    tracker, started = _Tracker(len(dataset), progress), time.perf_counter()
    for job in jobs:
        stop = None if job.whole_grid else _StopWhenCovered(store, job)

        def on_tile(p: IndexProgress, job=job, stop=stop) -> None:
            if stop:
                stop.seen(p)
            tracker.tile(job, p)

        before = tracker.finished
        report = index_raster(store, captioner, embedder, str(job.raster),
                              IndexSettings(job.tile_size, 0, variants), progress=on_tile, cancel=stop)
        _collect(store, report.run_id, job, dataset, gallery)
        gallery.captioned_now += report.progress.captioned_now
        tracker.job_done(job, before, report.progress.captioned_now)
    gallery.seconds = time.perf_counter() - started
    return gallery


def _collect(store: Store, run_id: int, job: RasterJob, dataset: CaptionDataset,
             gallery: CaptionedGallery) -> None:
    for tile in store.tiles(run_id):
        row = job.rows.get(tile.window.key)
        if row is None:
            continue
        if tile.status == "done":
            gallery.tile_ids[row] = tile.id
        else:
            reason = f"{tile.status}: {tile.reason or 'not captioned'}"
            gallery.missing.append((dataset.items[row].id, reason))


# -- scoring ----------------------------------------------------------------------------------

def gallery_vectors(store: Store, tile_ids: Sequence[Optional[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The stored variant vectors of every captioned row, and the row each belongs to."""
    blocks, owners = [], []
    for row, tile_id in enumerate(tile_ids):
        if tile_id is not None:
            vectors = store.vectors_of(tile_id)
            blocks.append(vectors)
            owners += [row] * len(vectors)
    if not blocks:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(blocks).astype(np.float32), np.asarray(owners, dtype=np.int64)


def max_variant_scores(query_vectors: np.ndarray, variant_vectors: np.ndarray,
                       owners: np.ndarray, n_images: int) -> np.ndarray:
    """Cosine of each query with each image's best variant: the rule search ranks tiles by.

    An image without variants scores -inf: it ranks last for every query.
    """
    scores = np.full((len(query_vectors), n_images), -np.inf, dtype=np.float32)
    if len(variant_vectors) == 0:
        return scores
    per_variant = _unit(query_vectors) @ _unit(variant_vectors).T
    order = np.argsort(owners, kind="stable")
    grouped = owners[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    scores[:, grouped[starts]] = np.maximum.reduceat(per_variant[:, order], starts, axis=1)
    return scores


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def run_end_to_end(dataset: CaptionDataset, jobs: Sequence[RasterJob], db: Path, captioner,
                   embedder, settings: EndToEndSettings, progress=None) -> EndToEndResult:
    """Caption (or reuse the cached captions of) every image, then rank images for every caption."""
    started = time.perf_counter()
    with Store(db, create=True) as store:
        gallery = caption_gallery(store, captioner, embedder, dataset, jobs, settings.variants, progress)
        vectors, owners = gallery_vectors(store, gallery.tile_ids)
    queries = dataset.queries()
    scores = max_variant_scores(embedder.embed([q.text for q in queries]), vectors, owners, len(dataset))
    run = evaluate_scores(scores, queries, dataset.image_ids,
                          name=f"{settings.captioner_label} v{settings.variants} {embedder.name}",
                          label=END_TO_END_LABEL, config=_config(db, embedder, settings, gallery))
    run.seconds = time.perf_counter() - started
    return EndToEndResult(dataset, run, Path(db), gallery, settings)


def _config(db: Path, embedder, settings: EndToEndSettings, gallery: CaptionedGallery) -> dict:
    config = {"mode": END_TO_END_LABEL, "captioner": settings.captioner_label,
              "variants": settings.variants, "embedder": embedder.name, "aggregation": "max",
              "captions_db": str(db), "uncaptioned_images": len(gallery.missing),
              "placeholder_captions": settings.placeholder}
    if settings.placeholder:
        config["warning"] = PLACEHOLDER_NOTE
    return config


# -- showing the result -----------------------------------------------------------------------

def format_end_to_end(result: EndToEndResult) -> str:
    """The metrics table, headed by the placeholder warning when the captions are meaningless."""
    table = format_table(result.dataset, [result.run])
    return f"{PLACEHOLDER_NOTE}\n{table}\n{PLACEHOLDER_NOTE}" if result.settings.placeholder else table


def end_to_end_report(result: EndToEndResult) -> dict:
    data = report_data(result.dataset, [result.run])
    gallery = result.gallery
    data["note"] = PLACEHOLDER_NOTE if result.settings.placeholder else None
    data["placeholder_captions"] = result.settings.placeholder
    data["captions"] = {"db": str(result.db), "captioned_now": gallery.captioned_now,
                        "from_cache": gallery.from_cache, "seconds": round(gallery.seconds, 3),
                        "uncaptioned": [{"id": item, "reason": why} for item, why in gallery.missing]}
    return data


def write_end_to_end_report(path: str | Path, result: EndToEndResult) -> None:
    Path(path).write_text(json.dumps(end_to_end_report(result), indent=2) + "\n", encoding="utf-8")
