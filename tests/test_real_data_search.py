"""Search quality on real human captions (UCM mosaic) with the real MiniLM model and real sqlite-vec."""

from __future__ import annotations

import pytest

from tilescribe.plugin.core.indexing.importer import import_captions
from tilescribe.devtools.mosaic_demo import (
    CLASS_QUERIES, load_mosaic_ground_truth, precision_at, write_import_file)
from tilescribe.plugin.core.search.search import SearchRequest, search
from tilescribe.plugin.core.index.store import Store


@pytest.fixture(scope="module")
def ucm_index(shared_data, minilm, tmp_path_factory):
    folder = shared_data / "ucm_captions_test"
    truth = load_mosaic_ground_truth(folder / "ucm_grid_mosaic_tiles.json")
    tmp = tmp_path_factory.mktemp("ucm")
    captions = write_import_file(truth, tmp / "captions.jsonl")
    store = Store(tmp / "ucm.tilescribe.sqlite", create=True)
    report = import_captions(store, minilm, str(folder / "ucm_grid_mosaic_synthetic_georef.tif"), str(captions))
    assert report.imported == 210 and not report.bad_lines
    yield store, truth
    store.close()


def test_class_queries_find_their_class(ucm_index, minilm):
    store, truth = ucm_index
    precisions = [precision_at(search(store, minilm, SearchRequest(q, k=5)), truth, cls)
                  for cls, q in CLASS_QUERIES.items()]
    # Measured 0.914 with all-MiniLM-L6-v2; a drop below 0.85 means ranking broke.
    assert sum(precisions) / len(precisions) >= 0.85


def test_hits_are_located_on_the_synthetic_georeference(ucm_index, minilm):
    store, truth = ucm_index
    hit = search(store, minilm, SearchRequest("rows of mobile homes", k=1))[0]
    col, row = hit.window.col_off // 256, hit.window.row_off // 256
    # Mosaic: 0.3 m pixels from (0, 0) in EPSG:3857, north up.
    assert hit.crs == "EPSG:3857"
    assert hit.bbox == pytest.approx((col * 76.8, -(row + 1) * 76.8, (col + 1) * 76.8, -row * 76.8))
    assert truth[tuple(hit.window.as_list())]["class"] == "mobilehomepark"


def test_extent_filter_on_real_index(ucm_index, minilm):
    store, _ = ucm_index
    left_half = (0.0, -2000.0, 576.0, 0.0)
    hits = search(store, minilm, SearchRequest("a tennis court", k=10, extent=left_half))
    assert hits and all(h.bbox[0] < 576.0 for h in hits)
