"""The search dock on a real index: results list, highlight layer, zoom, export, inspect, similar."""

from __future__ import annotations

import pytest
from gui_events import newest_task, wait_idle

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

TILE_M = 20.0  # 200 px of 10 cm


def _tile_rects(layer):
    """The 4 expected tile boxes (200 px tiles of the 400 px raster), keyed by window key."""
    from qgis.core import QgsRectangle

    extent = layer.extent()
    rects = {}
    for col in (0, 200):
        for row in (0, 200):
            x0 = extent.xMinimum() + col / 10
            y1 = extent.yMaximum() - row / 10
            rects[f"{col}_{row}_200x200"] = QgsRectangle(x0, y1 - TILE_M, x0 + TILE_M, y1)
    return rects


def _same_rect(a, b, tolerance=1e-6) -> bool:
    return all(abs(x - y) < tolerance for x, y in zip(
        (a.xMinimum(), a.yMinimum(), a.xMaximum(), a.yMaximum()),
        (b.xMinimum(), b.yMinimum(), b.xMaximum(), b.yMaximum())))


def _search(plugin, qtbot, wait_task, query: str):
    from qgis.PyQt.QtCore import Qt

    plugin.dock.queryEdit.setText(query)
    qtbot.keyClick(plugin.dock.queryEdit, Qt.Key_Return)  # Enter searches
    task = newest_task(plugin)
    result = wait_task(task, 90)
    assert result.error is None, result.error
    return plugin.dock.hits


def _assert_highlight_shows_the_tiles(highlight, layer) -> None:
    assert highlight.name().startswith("TileScribe results")
    assert highlight.featureCount() == 4 and highlight.crs().authid() == "EPSG:32617"
    expected = _tile_rects(layer)
    for feature in highlight.getFeatures():
        assert _same_rect(feature.geometry().boundingBox(), expected[feature["tile_id"]])
    assert highlight.labelsEnabled() and highlight.labeling().settings().fieldName == "rank"


def test_search_highlights_zooms_exports_and_unloads(plugin, fake_iface, captioned_index, add_raster, qtbot,
                                                    wait_task, tmp_path):
    from qgis.core import QgsProject, QgsVectorLayer

    layer = add_raster(captioned_index)
    assert plugin.dock.current_db() == str(captioned_index.with_name("neon.tilescribe.sqlite").resolve())
    plugin.dock_action.trigger()
    hits = _search(plugin, qtbot, wait_task, "a pond with dark water")
    assert [h.rank for h in hits] == [1, 2, 3, 4] and plugin.dock.resultsList.count() == 4
    assert hits[0].tile_id == "200_200_200x200" and "pond" in hits[0].caption
    assert not plugin.dock.resultsList.item(0).icon().isNull()  # a thumbnail of the tile
    assert "4 results" in plugin.dock.statusLabel.text()
    _assert_highlight_shows_the_tiles(plugin.search.results.layer(), layer)

    results = plugin.dock.resultsList
    qtbot.mouseClick(results.viewport(), 1, pos=results.visualItemRect(results.item(0)).center())
    extent, tile = fake_iface.canvas.extent(), _tile_rects(layer)["200_200_200x200"]
    assert extent.contains(tile) and extent.height() < 2 * TILE_M
    assert abs(extent.center().x() - tile.center().x()) < 1 and abs(extent.center().y() - tile.center().y()) < 1
    plugin.dock.zoomAllButton.click()
    assert fake_iface.canvas.extent().contains(layer.extent())

    written = QgsVectorLayer(f"{plugin.search.export(str(tmp_path / 'r.gpkg'))}|layername=tilescribe_results")
    assert written.featureCount() == 4 and written.crs().authid() == "EPSG:32617"
    assert sorted(f["rank"] for f in written.getFeatures()) == [1, 2, 3, 4]
    del written
    plugin.dock.clearButton.click()
    assert plugin.search.results.layer() is None and plugin.dock.resultsList.count() == 0

    _search(plugin, qtbot, wait_task, "sand")
    worker = plugin._client._process.popen
    plugin.unload()
    assert worker.poll() is not None  # the worker process is gone
    assert list(QgsProject.instance().mapLayers().values()) == [layer]  # only the user's raster remains


def test_map_extent_filter_and_other_map_crs(plugin_on_shared_worker, fake_iface, captioned_index, add_raster, qtbot,
                                            wait_task):
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle

    plugin = plugin_on_shared_worker
    layer = add_raster(captioned_index)
    tiles = _tile_rects(layer)
    canvas = fake_iface.canvas
    web_mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    to_map = QgsCoordinateTransform(layer.crs(), web_mercator, QgsProject.instance())
    canvas.setDestinationCrs(web_mercator)
    centre = tiles["0_0_200x200"].center()
    canvas.setExtent(to_map.transformBoundingBox(QgsRectangle(centre.x() - 2, centre.y() - 2,
                                                              centre.x() + 2, centre.y() + 2)))
    plugin.dock.extentCheck.setChecked(True)
    hits = _search(plugin, qtbot, wait_task, "a pond with dark water")
    assert [h.tile_id for h in hits] == ["0_0_200x200"]  # only the tile in view, though not the best
    assert plugin.search.results.layer().crs().authid() == "EPSG:32617"

    plugin.dock.extentCheck.setChecked(False)
    hits = _search(plugin, qtbot, wait_task, "a pond with dark water")
    plugin.search.activate(hits[0])
    assert canvas.extent().contains(to_map.transformBoundingBox(tiles["200_200_200x200"]))


def test_inspect_tool_shows_captions_and_finds_similar(plugin_on_shared_worker, fake_iface, captioned_index, add_raster,
                                                       qtbot, wait_task):
    from qgis.core import Qgis

    plugin = plugin_on_shared_worker
    layer = add_raster(captioned_index)
    pond = _tile_rects(layer)["200_200_200x200"].center()
    plugin.inspect_action.trigger()
    assert fake_iface.canvas.mapTool() is plugin.inspect_tool
    plugin.inspect_tool.canvasClicked.emit(pond, 1)
    task = newest_task(plugin)
    wait_task(task, 90)
    dialog = plugin.captions_dialog
    assert dialog.isVisible() and "200_200_200x200" in dialog.titleLabel.text()
    text = dialog.captionsView.toPlainText()
    assert "dark water of a small pond" in text and "a wet marsh among trees" in text

    dialog.similarButton.click()
    task = newest_task(plugin)
    wait_task(task, 90)
    assert len(plugin.dock.hits) == 3 and "200_200_200x200" not in [h.tile_id for h in plugin.dock.hits]
    assert "similar to tile 200_200_200x200" in plugin.dock.statusLabel.text()
    assert plugin.search.results.layer().featureCount() == 3

    outside = layer.extent().center()
    outside.setX(outside.x() + 100)
    plugin.inspect_tool.canvasClicked.emit(outside, 1)
    task = newest_task(plugin)
    wait_task(task, 30)
    level, text = fake_iface.messages()[-1]
    assert level == Qgis.Info and "No indexed tile" in text


def test_open_index_file_without_its_raster_and_bad_queries(plugin_on_shared_worker, fake_iface, captioned_index, qtbot,
                                                            wait_task):
    plugin = plugin_on_shared_worker
    db = str(captioned_index.with_name("neon.tilescribe.sqlite"))
    assert plugin.dock.current_db() is None
    plugin.dock.searchButton.click()
    assert "Choose an index first" in plugin.dock.statusLabel.text()

    plugin.dock.open_index_file(db)
    wait_idle(plugin, qtbot)  # its runs are read
    plugin.dock.searchButton.click()  # empty query
    assert "Type what you look for" in plugin.dock.statusLabel.text() and not plugin.runner.tasks

    plugin.dock.queryEdit.setText("x" * 2500)
    plugin.dock.searchButton.click()
    task = newest_task(plugin)
    result = wait_task(task, 90)
    assert "keep it under 2000" in plugin.dock.statusLabel.text() and result.error is not None
    assert not fake_iface.messages()  # a query problem is shown in the dock, not as an alarm

    hits = _search(plugin, qtbot, wait_task, "a dirt road")
    assert hits[0].tile_id == "0_200_200x200"
    highlight = plugin.search.results.layer()
    assert highlight.crs().authid() == "EPSG:32617"  # from the index itself: no raster layer is loaded
    assert plugin.dock.resultsList.item(0).icon().isNull()  # no layer to draw a thumbnail from


def test_raster_without_crs_is_highlighted_in_pixel_coordinates(plugin_on_shared_worker, fake_iface, add_raster,
                                                                minilm, tmp_path, qtbot, wait_task):
    from helpers import build_index
    from rasters import write_raster

    plugin = plugin_on_shared_worker
    raster = write_raster(tmp_path / "scan.tif", width=128, height=64, crs=None)
    store, _ = build_index(tmp_path / "scan.tilescribe.sqlite", raster, minilm,
                           [["a red roof"], ["a green field"]], tile_size=64)
    store.close()
    layer = add_raster(raster, "scan")
    hits = _search(plugin, qtbot, wait_task, "a field of grass")
    assert hits[0].tile_id == "64_0_64x64"
    highlight = plugin.search.results.layer()
    assert highlight.crs() == layer.crs()  # the layer's own pixel coordinates: no reprojection
    box = next(f for f in highlight.getFeatures() if f["rank"] == 1).geometry().boundingBox()
    assert (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()) == (64, -64, 128, 0)
    assert layer.extent().contains(box)
