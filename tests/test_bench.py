"""Benchmarks: bench-search reports its figures as JSON; the synthetic captions match their calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tilescribe.plugin.cli.main import main
from tilescribe.devtools.bench.synthetic import SyntheticCaptions


def test_bench_search_reports_latency_and_recall_as_json(capsys, tmp_path):
    assert main(["bench-search", "--vectors", "3000", "--queries", "5", "--format", "json",
                 "--tmp-dir", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("vectors", "exact_p50_ms", "exact_p95_ms", "fast_p50_ms", "fast_p95_ms", "recall_at_10",
                "fast_load_s", "build_s", "peak_rss_mb", "fast_index_mb"):
        assert key in result
    assert result["vectors"] == 3000 and result["queries"] == 5
    assert result["recall_at_10"] == 1.0  # 3,000 vectors: the re-scored pool holds all of them
    assert 3000 * 384 * 4 <= result["index_bytes"] < 2 * 3000 * 384 * 4  # one float copy of each vector
    assert list(tmp_path.iterdir()) == []  # the temporary index is gone


def test_synthetic_captions_have_the_documented_cosines():
    captions = SyntheticCaptions(600, variants=5, seed=3)
    centres = captions.tile_centres(0, 600)
    vectors = captions.variants_of(centres)
    tiles = np.repeat(np.arange(600), 5)
    topics = captions.tile_topic[tiles]
    sims = vectors @ vectors.T
    same_tile = (tiles[:, None] == tiles[None, :]) & ~np.eye(len(tiles), dtype=bool)
    same_topic = (topics[:, None] == topics[None, :]) & (tiles[:, None] != tiles[None, :])
    other = topics[:, None] != topics[None, :]
    assert sims[same_tile].mean() == pytest.approx(0.63, abs=0.03)
    assert sims[same_topic].mean() == pytest.approx(0.48, abs=0.03)
    assert sims[other].mean() == pytest.approx(0.21, abs=0.03)
    query = captions.variants_of(centres[:1], count=1)[0]  # how the benchmark makes its queries
    assert 0.4 < (vectors[:5] @ query).mean() < 0.9 and (vectors @ query).max() < 0.99


@pytest.mark.slow
def test_bench_index_times_stages_with_the_tiny_model(capsys, tmp_path):
    from rasters import write_raster

    raster = write_raster(tmp_path / "r.tif", width=256, height=256)
    assert main(["bench-index", "--raster", str(raster), "--no-mosaic", "--tile-size", "128",
                 "--format", "json", "--tmp-dir", str(tmp_path)]) == 0
    small = json.loads(capsys.readouterr().out)["small"]
    assert small["tiles_captioned"] == 4
    assert small["model_s_per_tile"] > 0 and small["outside_model_s_per_tile"] > 0
    assert small["tokens_per_s"] > 0 and small["peak_rss_mb"] > small["rss_after_loading_models_mb"] / 2
