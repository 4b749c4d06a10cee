"""Tiling: grid shape, edge tiles, geo-correct boxes in every kind of CRS, skip reasons, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window as RioWindow, bounds

from helpers import iter_tiles
from rasters import write_raster
from tilescribe.plugin.core.errors import RasterError
from tilescribe.plugin.core.raster.tiling import SKIP_CONSTANT, SKIP_NODATA, TileGrid, Window, open_raster, read_info


def tiles_of(path, tile_size, overlap=0):
    with open_raster(path) as ds:
        info = read_info(ds)
        return info, list(iter_tiles(ds, info, TileGrid(info.width, info.height, tile_size, overlap)))


def test_grid_covers_the_raster_with_clipped_edge_tiles():
    grid = TileGrid(1000, 600, 512)
    windows = list(grid.windows())
    assert [w.as_list() for w in windows] == [
        [0, 0, 512, 512], [512, 0, 488, 512], [0, 512, 512, 88], [512, 512, 488, 88]]
    assert len(grid) == 4


def test_grid_with_overlap_steps_by_tile_minus_overlap():
    grid = TileGrid(1000, 100, 512, overlap=64)
    assert [w.col_off for w in grid.windows()] == [0, 448, 896]
    assert [w.width for w in grid.windows()] == [512, 512, 104]


def test_raster_smaller_than_a_tile_is_one_tile():
    assert [w.as_list() for w in TileGrid(100, 50, 512).windows()] == [[0, 0, 100, 50]]


def test_grid_knows_its_own_windows():
    grid = TileGrid(1000, 600, 512)
    assert grid.contains(Window(512, 512, 488, 88))
    assert not grid.contains(Window(512, 512, 512, 512))
    assert not grid.contains(Window(10, 0, 512, 512))


@pytest.mark.parametrize("tile_size, overlap", [(8, 0), (256, 256), (256, -1)])
def test_bad_tile_settings_are_refused_with_the_setting_named(tile_size, overlap):
    with pytest.raises(RasterError, match="(Tile size|Overlap)"):
        TileGrid(100, 100, tile_size, overlap)


def test_tile_ids_are_stable_across_runs(rgb_raster):
    _, first = tiles_of(rgb_raster, 128)
    _, second = tiles_of(rgb_raster, 128)
    assert [t.key for t in first] == [t.key for t in second]
    assert len({t.key for t in first}) == len(first) == 6


@pytest.mark.parametrize("crs, transform", [
    ("EPSG:32618", from_origin(500000.0, 4200000.0, 10.0, 10.0)),   # projected, metres
    ("EPSG:4326", from_origin(20.4, -34.0, 0.0001, 0.0001)),          # geographic, degrees
])
def test_every_tile_bbox_matches_the_raster_transform(tmp_path, crs, transform):
    path = write_raster(tmp_path / "r.tif", width=300, height=200, crs=crs, transform=transform)
    info, tiles = tiles_of(path, 128, overlap=16)
    assert info.crs_label == crs
    for tile in tiles:
        w = tile.window
        expected = bounds(RioWindow(w.col_off, w.row_off, w.width, w.height), transform)
        assert tile.bbox == pytest.approx(expected, abs=1e-9)


def test_raster_without_crs_is_tiled_in_pixel_coordinates(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", width=300, height=200, crs=None)
    info, tiles = tiles_of(path, 128)
    assert not info.georeferenced and info.crs_label == "pixel coordinates"
    assert any("no CRS" in note for note in info.warnings)
    # As QGIS shows it: x = column, y = -row.
    assert tiles[4].window.as_list() == [128, 128, 128, 72]
    assert tiles[4].bbox == (128.0, -200.0, 256.0, -128.0)


def test_nodata_masked_and_constant_tiles_are_skipped_with_a_reason(tmp_path):
    data = np.random.default_rng(1).integers(1, 200, size=(3, 128, 384)).astype("uint8")
    data[:, :, 128:256] = 0        # nodata
    data[:, :, 256:] = 77          # constant colour
    path = write_raster(tmp_path / "nd.tif", width=384, height=128, nodata=0, data=data)
    _, tiles = tiles_of(path, 128)
    assert [t.skip_reason for t in tiles] == ["", SKIP_NODATA, SKIP_CONSTANT]


def test_alpha_masked_tiles_are_skipped(tmp_path):
    rgba = np.random.default_rng(2).integers(1, 200, size=(4, 128, 256)).astype("uint8")
    rgba[3] = 255
    rgba[3, :, 128:] = 0           # transparent half
    path = tmp_path / "rgba.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=128, count=4, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(0, 0, 1, 1), photometric="RGB",
                       alpha="YES") as dst:
        dst.write(rgba)
    _, tiles = tiles_of(path, 128)
    assert [t.skip_reason for t in tiles] == ["", SKIP_NODATA]


def test_float_raster_with_nan_tile_is_skipped(tmp_path):
    data = np.random.default_rng(3).random((1, 64, 128)).astype("float32")
    data[:, :, 64:] = np.nan
    path = write_raster(tmp_path / "f.tif", width=128, height=64, data=data)
    _, tiles = tiles_of(path, 64)
    assert [t.skip_reason for t in tiles] == ["", SKIP_NODATA]


def test_tiles_are_generated_lazily(rgb_raster):
    with open_raster(rgb_raster) as ds:
        info = read_info(ds)
        stream = iter_tiles(ds, info, TileGrid(info.width, info.height, 64))
        assert next(stream).window == Window(0, 0, 64, 64)


def test_shared_swellendam_mosaic_tiles_match_its_transform(shared_data):
    path = shared_data / "rasters" / "swellendam_aerial_2010_mosaic_epsg4326.tif"
    info, tiles = tiles_of(path, 512)
    assert info.crs_label == "EPSG:4326" and (info.width, info.height) == (1098, 4059)
    assert len(tiles) == 3 * 8
    with rasterio.open(path) as ds:
        for tile in tiles:
            w = tile.window
            assert tile.bbox == pytest.approx(
                bounds(RioWindow(w.col_off, w.row_off, w.width, w.height), ds.transform))
    # Its mask only trims the sheet edges: every 512 px tile has content.
    assert not any(t.skip_reason for t in tiles)


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "not found"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("just some text\n"), "Cannot read"),
])
def test_bad_raster_files_give_a_message_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(RasterError, match=message) as err:
        open_raster(path)
    assert str(path) in str(err.value)


def test_truncated_geotiff_is_reported_not_crashed(tmp_path, rgb_raster):
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(rgb_raster.read_bytes()[:400])
    with pytest.raises(RasterError) as err:
        info, tiles = tiles_of(truncated, 128)
    assert str(truncated) in str(err.value)
