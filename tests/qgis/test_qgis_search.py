"""The search dock on a real index: results list, highlight layer, zoom, export, inspect, similar."""

from __future__ import annotations

from pathlib import Path

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


def test_one_query_ranks_two_rasters_in_two_crss(plugin_on_shared_worker, fake_iface, captioned_index, add_raster,
                                                 minilm, qtbot, tmp_path):
    """Issue 20: every index of the project is ticked and searched at once; hits say their layer and are
    highlighted where they are on a map in a third CRS; unticking one narrows the search."""
    from gui_events import click_canvas, search_by_typing
    from helpers import build_index
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle,
                           QgsVectorLayer)
    from qgis.PyQt.QtCore import Qt
    from rasters import write_raster
    from rasterio.transform import from_origin

    plugin = plugin_on_shared_worker
    neon = add_raster(captioned_index, "neon")
    origin = (-9_130_000.0, 3_470_000.0)  # EPSG:3857, 10 m pixels, 64 px tiles
    town = write_raster(tmp_path / "town.tif", width=128, height=128, crs="EPSG:3857",
                        transform=from_origin(*origin, 10.0, 10.0))
    build_index(tmp_path / "town.tilescribe.sqlite", town, minilm,
                [["a red roof of a house"], ["a parking lot with cars"], ["a swimming pool"],
                 ["a muddy pond with brown water"]], tile_size=64)[0].close()
    add_raster(town, "town")
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    canvas = fake_iface.canvas
    canvas.setDestinationCrs(wgs84)

    dock = plugin.dock
    assert dock.indexList.count() == 2 and len(dock.selected_dbs()) == 2  # both ticked by default
    assert dock.index_summary() == "all 2 indexes" and dock.current_db() is None
    assert not dock.runCombo.isEnabled() and "Tick one index" in dock.runCombo.toolTip()
    hits = search_by_typing(plugin, qtbot, "a pond with water")
    assert len(hits) == 8 and [h.rank for h in hits] == list(range(1, 9))
    assert {Path(h.index).name for h in hits} == {"neon.tilescribe.sqlite", "town.tilescribe.sqlite"}
    assert {Path(h.index).name for h in hits[:2]} == {"neon.tilescribe.sqlite", "town.tilescribe.sqlite"}
    assert "pond" in hits[0].caption and "pond" in hits[1].caption
    rows = [dock.resultsList.item(i).text() for i in range(dock.resultsList.count())]
    assert all(("   neon\n" in row) != ("   town\n" in row) for row in rows)  # each row names its layer
    assert "8 results" in dock.statusLabel.text() and "2 indexes" in dock.statusLabel.text()

    highlight = plugin.search.results.layer()
    assert highlight.crs() == wgs84 and highlight.featureCount() == 8
    expected = {("neon", tile): rect for tile, rect in _tile_rects(neon).items()}
    for col in (0, 64):
        for row in (0, 64):
            x0, y1 = origin[0] + col * 10, origin[1] - row * 10
            expected[("town", f"{col}_{row}_64x64")] = QgsRectangle(x0, y1 - 640, x0 + 640, y1)
    crs = {"neon": neon.crs(), "town": QgsCoordinateReferenceSystem("EPSG:3857")}
    for feature in highlight.getFeatures():
        name = "town" if feature["raster"].endswith("town.tif") else "neon"
        to_map = QgsCoordinateTransform(crs[name], wgs84, QgsProject.instance())
        want = to_map.transformBoundingBox(expected[(name, feature["tile_id"])])
        assert _same_rect(feature.geometry().boundingBox(), want, tolerance=1e-6), (name, feature["tile_id"])

    # A real click on the town's best row zooms there, on the map in WGS 84.
    at = next(i for i, hit in enumerate(hits) if hit.index.endswith("town.tilescribe.sqlite"))
    results = dock.resultsList
    qtbot.mouseClick(results.viewport(), Qt.LeftButton, pos=results.visualItemRect(results.item(at)).center())
    hits_at_tile = hits[at].tile_id
    tile = QgsCoordinateTransform(crs["town"], wgs84, QgsProject.instance()).transformBoundingBox(
        expected[("town", hits_at_tile)])
    assert canvas.extent().contains(tile) and canvas.extent().width() < 3 * tile.width()
    dock.zoomAllButton.click()
    assert canvas.extent().contains(highlight.extent())
    qtbot.waitUntil(lambda: not dock.thumbnails_pending(), timeout=10000)
    assert all(not results.item(i).icon().isNull() for i in range(results.count()))  # both layers draw theirs
    written = QgsVectorLayer(f"{plugin.search.export(str(tmp_path / 'r.gpkg'))}|layername=tilescribe_results")
    assert written.featureCount() == 8 and written.crs() == wgs84
    assert {Path(f["index"]).name for f in written.getFeatures()} == {"neon.tilescribe.sqlite",
                                                                      "town.tilescribe.sqlite"}
    del written

    # Only in the map extent (WGS 84), around one town tile: each index gets it in its raster's CRS.
    canvas.setExtent(tile.buffered(-tile.width() / 4))
    dock.extentCheck.setChecked(True)
    hits = search_by_typing(plugin, qtbot, "a pond with water")
    assert [(Path(h.index).name, h.tile_id) for h in hits] == [("town.tilescribe.sqlite", hits_at_tile)]
    dock.extentCheck.setChecked(False)

    # Inspect, with both ticked, reads the index of the raster under the click (not the active layer's).
    fake_iface.mock.activeLayer.return_value = neon
    canvas.setExtent(tile.buffered(tile.width()))
    plugin.inspect_action.trigger()
    click_canvas(qtbot, canvas, tile.center())
    wait_idle(plugin, qtbot)
    assert plugin.captions_dialog.isVisible() and hits_at_tile in plugin.captions_dialog.titleLabel.text()
    assert "pond" in plugin.captions_dialog.captionsView.toPlainText()
    plugin.captions_dialog.hide()
    plugin.inspect_action.trigger()

    # Untick the town's index (select its row, press Space): only the forest is searched, its runs listed.
    town_row = next(dock.indexList.item(i) for i in range(2) if dock.indexList.item(i).text().startswith("town"))
    view = dock.indexList
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualItemRect(town_row).center())
    qtbot.keyClick(view, Qt.Key_Space)
    assert town_row.checkState() == Qt.Unchecked and dock.index_summary().startswith("neon")
    assert dock.current_db().endswith("neon.tilescribe.sqlite")
    assert dock.resultsList.count() == 0  # the list never shows an unticked index's results
    hits = search_by_typing(plugin, qtbot, "a pond with water")
    assert len(hits) == 4 and all(not h.index for h in hits) and "neon.tilescribe.sqlite, run" in \
        dock.statusLabel.text()
    assert plugin.search.results.layer().crs().authid() == "EPSG:32617"

    # Both ticked again, then the town's layer leaves the project: its index leaves the list too.
    qtbot.keyClick(view, Qt.Key_Space)
    assert len(dock.selected_dbs()) == 2
    QgsProject.instance().removeMapLayer([layer.id() for layer in QgsProject.instance().mapLayersByName("town")][0])
    assert [Path(db).name for db in dock.selected_dbs()] == ["neon.tilescribe.sqlite"] and view.count() == 1
