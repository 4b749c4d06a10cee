"""One bad tile never stops a run: failures are recorded on the tile and retried a bounded
number of times; only a gone engine ends a run, and then answers in flight are kept."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fakes import FakeCaptioner
from rasters import write_raster
from tilescribe.plugin.core.errors import EngineError, IndexingError
from tilescribe.plugin.core.indexing.indexer import (CONSECUTIVE_CRASH_LIMIT, MAX_TILE_ATTEMPTS, IndexSettings,
                                                     index_raster)
from tilescribe.plugin.core.index.store import Store

SETTINGS = IndexSettings(tile_size=50, variants=2)  # a 200 x 100 raster: 8 tiles


class CrashingOn(FakeCaptioner):
    """Raises `error` for the tiles whose PNG it has seen marked as bad (by call number)."""

    def __init__(self, bad_calls=(), error=RuntimeError("llama_decode returned 1"), **kwargs):  # noqa: B008
        super().__init__(**kwargs)
        self.bad_calls, self.error = set(bad_calls), error

    def caption(self, png, n_variants):
        with self._lock:
            upcoming = self.calls + 1
        if upcoming in self.bad_calls:
            with self._lock:
                self.calls += 1
            raise self.error
        return super().caption(png, n_variants)


@pytest.fixture
def raster(tmp_path):
    data = np.random.default_rng(3).integers(1, 250, size=(3, 100, 200)).astype("uint8")
    return write_raster(tmp_path / "r.tif", width=200, height=100, data=data)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "r.tilescribe.sqlite", create=True) as store:
        yield store


def attempts(store, run_id):
    return dict(store._conn.execute("select tile_key, attempts from tiles where run_id = ? and status = 'failed'",
                                   (run_id,)).fetchall())


def test_an_unexpected_crash_on_one_tile_is_recorded_and_the_run_goes_on(store, raster, hashing_embedder):
    report = index_raster(store, CrashingOn({2}), hashing_embedder, str(raster), SETTINGS)
    assert store.tile_counts(report.run_id) == {"pending": 0, "done": 7, "skipped": 0, "failed": 1}
    (key, reason), = report.failures
    assert "crashed on this tile" in reason and "llama_decode returned 1" in reason
    assert attempts(store, report.run_id) == {key: 1}


def test_failed_tiles_are_retried_a_bounded_number_of_runs_then_left_with_their_reason(store, raster, hashing_embedder):
    first = index_raster(store, CrashingOn({1}), hashing_embedder, str(raster), SETTINGS)
    run_id, key = first.run_id, first.failures[0][0]
    for tried in range(2, MAX_TILE_ATTEMPTS + 1):  # each later run tries it again, and it fails again
        again = CrashingOn(range(1, 1000))
        index_raster(store, again, hashing_embedder, str(raster), SETTINGS)
        assert again.calls == 1 and attempts(store, run_id) == {key: tried}
    left = CrashingOn(range(1, 1000))
    index_raster(store, left, hashing_embedder, str(raster), SETTINGS)
    assert left.calls == 0, "after MAX_TILE_ATTEMPTS runs a failed tile is left with its reason"
    assert "crashed on this tile" in store._conn.execute(
        "select reason from tiles where tile_key = ?", (key,)).fetchone()[0]
    # --retry-failed tries it once more, and a working model now captions it.
    forced = FakeCaptioner()
    index_raster(store, forced, hashing_embedder, str(raster),
                 IndexSettings(tile_size=50, variants=2, retry_failed=True))
    assert forced.calls == 1 and store.tile_counts(run_id)["done"] == 8


def test_a_gone_engine_ends_the_run_keeps_answers_in_flight_and_leaves_its_tile_pending(
        store, raster, hashing_embedder):
    gate = threading.Barrier(3)
    gone = EngineError("llama-server stopped again after a restart")

    class GoneOnThird(CrashingOn):
        def caption(self, png, n_variants):
            with self._lock:
                self.calls += 1
                call = self.calls
            if call <= 3:
                gate.wait(5)  # three tiles in flight together
            if call == 3:
                raise gone
            return _answer(png, n_variants)

    with pytest.raises(EngineError, match="stopped again"):
        index_raster(store, GoneOnThird(parallel_requests=3), hashing_embedder, str(raster), SETTINGS)
    run_id = store.runs()[-1].id
    counts = store.tile_counts(run_id)
    assert counts["done"] == 2 and counts["failed"] == 0  # both answers in flight were saved
    assert counts["pending"] == 6
    resumed = FakeCaptioner()
    index_raster(store, resumed, hashing_embedder, str(raster), SETTINGS)
    assert resumed.calls == 6 and store.tile_counts(run_id)["done"] == 8


def test_crashes_on_every_tile_stop_the_run_after_a_few(store, raster, hashing_embedder):
    broken = CrashingOn(range(1, 1000), error=OSError("segfault-ish"))
    with pytest.raises(IndexingError, match=rf"crashed on {CONSECUTIVE_CRASH_LIMIT} tiles in a row"):
        index_raster(store, broken, hashing_embedder, str(raster), SETTINGS)
    assert broken.calls == CONSECUTIVE_CRASH_LIMIT
    run_id = store.runs()[-1].id
    assert store.tile_counts(run_id)["failed"] == CONSECUTIVE_CRASH_LIMIT


def _answer(png, n_variants):
    return FakeCaptioner().caption(png, n_variants)


@pytest.mark.slow
@pytest.mark.parametrize("n_ctx", [2048, 4096])
def test_the_tiny_llava_pair_with_default_fields_indexes_to_the_end(tmp_path, tiny_pair, hashing_embedder, n_ctx):
    # Once: "llama_decode returned 1" on the first tile aborted every run (the answer ran past
    # n_ctx because the image's tokens were not in llama-cpp-python's budget; 2048 and 4096 failed).
    from tilescribe.plugin.core.captioning.llama_backend import LlamaCppCaptioner

    data = np.random.default_rng(9).integers(1, 250, size=(3, 64, 128)).astype("uint8")
    raster = write_raster(tmp_path / "two-tiles.tif", width=128, height=64, data=data)
    with Store(tmp_path / "i.tilescribe.sqlite", create=True) as store, \
            LlamaCppCaptioner(*tiny_pair, n_ctx=n_ctx, max_attempts=1) as captioner:
        report = index_raster(store, captioner, hashing_embedder, str(raster),
                              IndexSettings(tile_size=64, variants=5))
        counts = store.tile_counts(report.run_id)
    assert counts["pending"] == 0 and counts["done"] + counts["failed"] == 2
    assert all("llama_decode" not in reason and "crashed" not in reason for _, reason in report.failures)
