"""The size of a web layer rendered over an extent: what the Index dialog shows, and what it refuses."""

from __future__ import annotations

import pytest

from tilescribe.plugin.core.errors import RasterError
from tilescribe.plugin.core.indexing.render_plan import MAX_SIDE_PX, render_plan


def test_the_plan_counts_pixels_tiles_and_megabytes():
    plan = render_plan(5000.0, 2500.0, 10.0, 512, 0)  # 5 km x 2.5 km at 10 m
    assert (plan.width_px, plan.height_px, plan.tiles) == (500, 250, 1)
    assert plan.megabytes == pytest.approx(500 * 250 * 3 / 1e6)
    assert plan.describe(10.0, "EPSG:3857", 512) == (
        "500 x 250 px at 10 EPSG:3857 units per pixel: 1 tile of 512 px to caption, a GeoTIFF of up to 0.4 MB.")
    assert render_plan(1001.0, 1000.0, 1.0, 256, 0).tiles == 16  # a 1 px sliver joins the tile before it


def test_an_extent_too_large_for_the_resolution_is_refused_with_the_coarsest_that_fits():
    with pytest.raises(RasterError) as caught:
        render_plan(1_000_000.0, 500_000.0, 1.0, 512, 0)  # 1,000 km at 1 m
    text = str(caught.value)
    assert "1,000,000 x 500,000 px" in text and f"{MAX_SIDE_PX:,} px a side" in text
    assert "at least 33.3 for this extent" in text


@pytest.mark.parametrize("width, height, resolution, expected", [
    (0.0, 100.0, 1.0, "The extent is empty"),
    (100.0, 100.0, 0.0, "positive number of map units per pixel"),
    (100.0, 100.0, float("nan"), "positive number of map units per pixel"),
    (100.0, 100.0, 50.0, "only 2 x 2 px"),
])
def test_empty_extents_and_bad_resolutions_are_named(width, height, resolution, expected):
    with pytest.raises(RasterError, match=expected):
        render_plan(width, height, resolution, 512, 0)
