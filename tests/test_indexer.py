"""Indexing: every tile exactly once, skips never reach the model, resume, cancel, failures, lock."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import FakeCaptioner
from rasters import write_raster
from tilescribe.plugin.core.errors import IndexingError, RasterError
from tilescribe.plugin.core.indexing.indexer import IndexSettings, index_raster
from tilescribe.plugin.core.index.locking import IndexerLock
from tilescribe.plugin.core.search.search import SearchRequest, search
from tilescribe.plugin.core.index.store import Store

SETTINGS = IndexSettings(tile_size=100, variants=3)


@pytest.fixture
def raster(tmp_path):
    data = np.random.default_rng(5).integers(1, 250, size=(3, 200, 300)).astype("uint8")
    data[:, 100:, 200:] = 0  # one nodata tile
    return write_raster(tmp_path / "r.tif", width=300, height=200, nodata=0, data=data)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "r.tilescribe.sqlite", create=True) as store:
        yield store


def test_every_content_tile_is_captioned_once_and_empty_ones_skipped(store, raster, hashing_embedder):
    captioner = FakeCaptioner()
    events = []
    report = index_raster(store, captioner, hashing_embedder, str(raster), SETTINGS, progress=events.append)
    counts = store.tile_counts(report.run_id)
    assert counts == {"pending": 0, "done": 5, "skipped": 1, "failed": 0}
    assert captioner.calls == 5  # the nodata tile never reached the model
    assert store.vector_count(report.run_id) == 15 == store.variant_count(report.run_id)
    assert events[-1].finished == events[-1].total == 6
    assert store.run_info(report.run_id).finished_at
    assert report.timings.model > 0 and report.timings.read > 0


def test_a_second_run_resumes_and_recaptions_nothing(store, raster, hashing_embedder):
    first = index_raster(store, FakeCaptioner(), hashing_embedder, str(raster), SETTINGS)
    again = FakeCaptioner()
    second = index_raster(store, again, hashing_embedder, str(raster), SETTINGS)
    assert second.run_id == first.run_id and again.calls == 0


def test_cancel_keeps_what_was_done_and_the_next_run_finishes(store, raster, hashing_embedder):
    calls = []
    report = index_raster(store, FakeCaptioner(on_call=calls.append), hashing_embedder, str(raster),
                          SETTINGS, cancel=lambda: len(calls) >= 2)
    assert report.cancelled and store.tile_counts(report.run_id)["done"] == 2
    assert not store.run_info(report.run_id).finished_at
    rest = FakeCaptioner()
    index_raster(store, rest, hashing_embedder, str(raster), SETTINGS)
    assert rest.calls == 3 and store.tile_counts(report.run_id)["done"] == 5


def test_a_tile_whose_captions_fail_is_recorded_and_retried_next_run(store, raster, hashing_embedder):
    report = index_raster(store, FakeCaptioner(fail_calls={2}), hashing_embedder, str(raster), SETTINGS)
    assert store.tile_counts(report.run_id)["failed"] == 1
    assert "fake failure" in report.failures[0][1]
    failed = store.tiles(report.run_id, "failed")[0]
    assert "fake failure on call 2" in failed.reason
    retry = FakeCaptioner()
    index_raster(store, retry, hashing_embedder, str(raster), SETTINGS)
    assert retry.calls == 1 and store.tile_counts(report.run_id)["done"] == 5


def test_parallel_captioning_stores_every_tile_once(store, raster, hashing_embedder):
    captioner = FakeCaptioner(parallel_requests=3)
    report = index_raster(store, captioner, hashing_embedder, str(raster), SETTINGS)
    assert captioner.calls == 5 and store.tile_counts(report.run_id)["done"] == 5


def test_captioned_tiles_are_searchable(store, raster, hashing_embedder):
    index_raster(store, FakeCaptioner(), hashing_embedder, str(raster), SETTINGS)
    hits = search(store, hashing_embedder, SearchRequest("a bright tile", k=3))
    assert len(hits) == 3 and hits[0].caption.startswith("A ")


def test_a_second_indexer_on_the_same_file_is_refused(store, raster, hashing_embedder):
    with IndexerLock(store.path):
        with pytest.raises(IndexingError, match="Another TileScribe indexer"):
            index_raster(store, FakeCaptioner(), hashing_embedder, str(raster), SETTINGS)
    index_raster(store, FakeCaptioner(), hashing_embedder, str(raster), SETTINGS)  # free again


def test_another_tile_size_is_another_run(store, raster, hashing_embedder):
    a = index_raster(store, FakeCaptioner(), hashing_embedder, str(raster), SETTINGS)
    b = index_raster(store, FakeCaptioner(), hashing_embedder, str(raster), IndexSettings(tile_size=150, variants=3))
    assert a.run_id != b.run_id and store.tile_counts(b.run_id)["done"] + store.tile_counts(b.run_id)["skipped"] == 4


def test_sixteen_bit_single_band_raster_is_rendered_and_indexed(tmp_path, store, hashing_embedder):
    data = (np.random.default_rng(9).random((1, 100, 100)) * 4000 + 1000).astype("uint16")
    path = write_raster(tmp_path / "dem.tif", width=100, height=100, data=data)
    captioner = FakeCaptioner()
    index_raster(store, captioner, hashing_embedder, str(path), SETTINGS)
    from io import BytesIO
    from PIL import Image

    image = Image.open(BytesIO(captioner.images[0]))
    assert image.mode == "RGB" and image.size == (100, 100)
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255  # stretched, not a black 16-bit image


def test_band_setting_that_does_not_fit_is_named(store, raster, hashing_embedder):
    from tilescribe.plugin.core.raster.rendering import RenderSettings

    with pytest.raises(RasterError, match=r"Band setting \[5\]"):
        index_raster(store, FakeCaptioner(), hashing_embedder, str(raster),
                     IndexSettings(tile_size=100, render=RenderSettings(bands=(5,))))


def test_resuming_with_other_speed_settings_continues_the_same_run(store, raster, hashing_embedder):
    class Tuned(FakeCaptioner):
        def __init__(self, threads, **kw):
            super().__init__(**kw)
            self.threads = threads

        def describe(self):
            return {**super().describe(), "settings": {"n_threads": self.threads, "temperature": 0.3}}

    calls = []
    first = index_raster(store, Tuned(1, on_call=calls.append), hashing_embedder, str(raster), SETTINGS,
                         cancel=lambda: len(calls) >= 2)
    faster = Tuned(8)
    second = index_raster(store, faster, hashing_embedder, str(raster), SETTINGS)
    assert second.run_id == first.run_id and faster.calls == 3
    assert store.run_info(first.run_id).captioner["settings"]["n_threads"] == 1  # as first recorded
