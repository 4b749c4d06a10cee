"""The dock over a project's indexes (issue 20 items 5 and 6), driven by real Qt events: the Run box,
a newer run, Inspect over every searched index, the export folder, widths at the dock's default size,
an index of another embedder, and the results kept as a layer of the project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gui_events import bar_texts, click_canvas, search_by_typing, wait_idle

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

TOWN_ORIGIN = (-9_130_000.0, 3_470_000.0)  # EPSG:3857, 10 m pixels, 64 px tiles
TOWN_CAPTIONS = [["a red roof of a house"], ["a parking lot with cars"], ["a swimming pool"],
                 ["a muddy pond with brown water"]]


def _town(tmp_path, embedder, name: str = "town") -> Path:
    """A 128 px raster in EPSG:3857 with its index beside it (4 tiles of 64 px)."""
    from helpers import build_index
    from rasterio.transform import from_origin
    from rasters import write_raster

    raster = write_raster(tmp_path / f"{name}.tif", width=128, height=128, crs="EPSG:3857",
                          transform=from_origin(*TOWN_ORIGIN, 10.0, 10.0))
    build_index(tmp_path / f"{name}.tilescribe.sqlite", raster, embedder, TOWN_CAPTIONS, tile_size=64)[0].close()
    return raster


def _two_run_neon(shared_data, minilm, tmp_path) -> Path:
    """NEON indexed twice into one file: 200 px tiles (run 1), then 100 px tiles (run 2, all 'a pond')."""
    from conftest import NEON, TILE_CAPTIONS
    from helpers import build_index

    raster = tmp_path / "neon.tif"
    shutil.copy(shared_data / NEON, raster)
    db = raster.with_name("neon.tilescribe.sqlite")
    build_index(db, raster, minilm, TILE_CAPTIONS, tile_size=200)[0].close()
    build_index(db, raster, minilm, [["a pond"]] * 16, tile_size=100)[0].close()
    return raster


def _click_row(qtbot, view, row) -> None:
    from qgis.PyQt.QtCore import Qt

    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualItemRect(row).center())


def test_switching_the_run_clears_the_other_runs_results(plugin_on_shared_worker, shared_data, minilm, add_raster,
                                                         qtbot, tmp_path):
    """Bug: choosing another run in the Run box left the first run's results listed and on the map."""
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    add_raster(_two_run_neon(shared_data, minilm, tmp_path))
    wait_idle(plugin, qtbot)
    dock, combo = plugin.dock, plugin.dock.runCombo
    assert "100 px" in combo.currentText()
    assert len(search_by_typing(plugin, qtbot, "a pond")) == 10
    assert plugin.search.results.layer() is not None
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key_Down)  # the older run, chosen with the keyboard
    assert "200 px" in combo.currentText()
    assert dock.resultsList.count() == 0 and dock.hits == [] and dock.statusLabel.text() == ""
    assert plugin.search.results.layer() is None and not dock.exportButton.isEnabled()
    hits = search_by_typing(plugin, qtbot, "a dirt road")  # the chosen run answers
    assert len(hits) == 4 and "200 px" in dock.statusLabel.text()
    qtbot.keyClick(combo, Qt.Key_Down)  # no other run below: nothing changes, the results stay
    assert dock.resultsList.count() == 4


def test_a_newer_run_of_the_searched_index_is_offered(plugin_on_shared_worker, fake_iface, captioned_index, minilm,
                                                      add_raster, qtbot, tmp_path):
    """Bug: a raster indexed again (another tile size) got a newer run that the dock did not mention: it
    kept searching the older one."""
    from helpers import build_index
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QPushButton

    plugin = plugin_on_shared_worker
    raster = tmp_path / "neon.tif"
    shutil.copy(captioned_index, raster)
    db = raster.with_name("neon.tilescribe.sqlite")
    shutil.copy(captioned_index.with_name("neon.tilescribe.sqlite"), db)
    add_raster(raster)
    wait_idle(plugin, qtbot)
    combo = plugin.dock.runCombo
    assert combo.count() == 1 and "200 px" in combo.currentText()
    assert search_by_typing(plugin, qtbot, "a dirt road")
    _, new_run = build_index(db, raster, minilm, [["a dirt road"]] * 16, tile_size=100)
    _.close()
    plugin.search.offer_index(str(db), "neon is indexed in neon.tilescribe.sqlite.")  # as an indexing job ends
    wait_idle(plugin, qtbot)
    assert combo.count() == 2 and "200 px" in combo.currentText()  # the chosen run is never switched silently
    offer = [text for text in bar_texts(fake_iface.bar) if "newer run" in text]
    assert offer and f"run {new_run}" in offer[0] and "100 px" in offer[0], bar_texts(fake_iface.bar)
    button = next(b for b in fake_iface.bar.findChildren(QPushButton) if b.text() == f"Search run {new_run}")
    qtbot.mouseClick(button, Qt.LeftButton)
    assert plugin.dock.current_run().id == new_run and "100 px" in combo.currentText()
    assert plugin.dock.resultsList.count() == 0  # the other run's results went with the switch
    hits = search_by_typing(plugin, qtbot, "a dirt road")
    assert len(hits) == 10 and f"run {new_run} (" in plugin.dock.statusLabel.text()


def test_inspect_reads_every_searched_index(plugin_on_shared_worker, fake_iface, captioned_index, minilm, add_raster,
                                            qtbot, tmp_path):
    """Bug: with several indexes ticked, Inspect found only tiles of an index whose raster layer is in the
    project (else the active layer's): an index opened with Open… was never read."""
    from qgis.core import QgsCoordinateTransform, QgsPointXY, QgsProject

    plugin = plugin_on_shared_worker
    neon = add_raster(captioned_index, "neon")
    town = _town(tmp_path, minilm)
    plugin.dock.open_index_file(str(town.with_name("town.tilescribe.sqlite")))  # its raster is not loaded
    wait_idle(plugin, qtbot)
    assert len(plugin.dock.selected_dbs()) == 2
    canvas = fake_iface.canvas
    # The town's pond tile (col 64, row 64), on the map in NEON's CRS.
    pond = QgsPointXY(TOWN_ORIGIN[0] + 96 * 10, TOWN_ORIGIN[1] - 96 * 10)
    from qgis.core import QgsCoordinateReferenceSystem

    to_map = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:3857"), neon.crs(), QgsProject.instance())
    at = to_map.transform(pond)
    canvas.setCenter(at)
    canvas.refresh()
    qtbot.wait(50)
    plugin.inspect_action.trigger()
    click_canvas(qtbot, canvas, at)
    wait_idle(plugin, qtbot)
    dialog = plugin.captions_dialog
    assert dialog is not None and dialog.isVisible(), bar_texts(fake_iface.bar)
    assert "64_64_64x64" in dialog.titleLabel.text() and "town.tilescribe.sqlite" in dialog.titleLabel.text()
    assert "muddy pond" in dialog.captionsView.toPlainText()
    assert "1 caption" in dialog.titleLabel.text() and "1 captions" not in dialog.titleLabel.text()
    # NEON's tiles are still found where NEON lies.
    canvas.setCenter(neon.extent().center())
    click_canvas(qtbot, canvas, neon.extent().center())
    wait_idle(plugin, qtbot)
    assert "neon.tilescribe.sqlite" in dialog.titleLabel.text()
    plugin.inspect_action.trigger()


def test_export_dialog_opens_beside_the_project_file(plugin_on_shared_worker, captioned_index, add_raster, qtbot,
                                                     tmp_path):
    """Bug: Export… opened in QGIS's working folder (a relative file name), not beside the project."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtCore import Qt, QTimer
    from qgis.PyQt.QtWidgets import QApplication, QFileDialog

    plugin = plugin_on_shared_worker
    add_raster(captioned_index)
    folder = tmp_path / "my project"
    folder.mkdir()
    assert QgsProject.instance().write(str(folder / "survey.qgz"))
    assert search_by_typing(plugin, qtbot, "a dirt road")
    seen = []

    def look() -> None:  # the dialog may be modal: look at it from inside its event loop
        dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, QFileDialog) and w.isVisible()]
        if not dialogs:
            QTimer.singleShot(50, look)
            return
        dialog = dialogs[0]
        seen.append((dialog.directory().absolutePath(), dialog.selectedFiles()))
        dialog.reject()

    QTimer.singleShot(50, look)
    qtbot.mouseClick(plugin.dock.exportButton, Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(seen), timeout=5000)
    directory, files = seen[0]
    assert directory == str(folder.resolve()), seen
    assert files and Path(files[0]).parent == folder.resolve() and files[0].endswith(".gpkg"), files


def test_dock_texts_fit_its_default_width(plugin, fake_iface, add_raster, minilm, qtbot, tmp_path):
    """Bugs: the query's placeholder and the index entries were cut at the dock's default width (a
    scroll bar under the list), and the index row read 'Search in  all 2 indexes' (a wide gap)."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QLabel

    for name in ("ucm_mosaic_part_1", "ucm_mosaic_part_2"):
        add_raster(_town(tmp_path, minilm, name), name)
    dock = plugin.dock
    plugin.dock_action.trigger()
    qtbot.waitUntil(dock.queryEdit.isVisible)
    qtbot.wait(50)
    edit = dock.queryEdit
    room = edit.width() - 2 * edit.style().pixelMetric(edit.style().PM_DefaultFrameWidth) - 8
    assert edit.fontMetrics().horizontalAdvance(edit.placeholderText()) <= room, (edit.placeholderText(), room)
    view = dock.indexList
    assert not view.horizontalScrollBar().isVisible()
    indicator = view.style().pixelMetric(view.style().PM_IndicatorWidth) + 12
    for i in range(view.count()):
        item = view.item(i)
        assert view.fontMetrics().horizontalAdvance(item.text()) + indicator <= view.viewport().width(), item.text()
        assert "ucm_mosaic_part" in item.text() and item.data(Qt.UserRole) in item.toolTip()
    # The row above the list reads as one phrase: the gaps between its labels are one space wide.
    labels = sorted((w for w in dock.findChildren(QLabel) if w.isVisible() and w.text()
                     and w.parentWidget() is dock.indexSummary.parentWidget()
                     and abs(w.geometry().center().y() - dock.indexSummary.geometry().center().y()) < 8),
                    key=lambda w: w.x())
    space = dock.fontMetrics().horizontalAdvance(" ")
    phrase, end = "", None
    for label in labels:
        margin = label.contentsRect().left() + label.margin()
        start = label.x() + margin
        if end is not None:
            phrase += " " * max(1, round((start - end) / space))
        phrase += label.text()
        end = start + label.fontMetrics().horizontalAdvance(label.text())
    assert phrase.startswith("Search in all 2 indexes"), repr(phrase)
    # The Run box's list is as wide as its longest entry (the box itself is narrower).
    from tilescribe.plugin.qgis.runs import RunChoice

    long_run = RunChoice("/x.tilescribe.sqlite", 7, "a-rather-long-model-name-Q4_K_M.gguf", 512, 12345, 12345,
                         "2026-12-05 10:00", "/x.tif", "", False)
    dock.set_runs([long_run, RunChoice("/x.tilescribe.sqlite", 6, "m.gguf", 256, 1, 1, "2026-12-04 10:00",
                                       "/x.tif", "", False)])
    dock.runCombo.showPopup()
    qtbot.wait(50)
    popup = dock.runCombo.view()
    assert popup.width() >= popup.sizeHintForColumn(0), (popup.width(), popup.sizeHintForColumn(0))
    dock.runCombo.hidePopup()


def test_an_index_of_another_embedder_is_marked_left_out_and_refused_alone(plugin_on_shared_worker, fake_iface,
                                                                           captioned_index, add_raster, minilm,
                                                                           hashing_embedder, qtbot, tmp_path):
    """Bug: one index made with another embedding model among the ticked ones refused the whole search,
    in the command line's words (--embedder, --skip-other-embedders), and the list did not mark it."""
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    add_raster(captioned_index, "neon")
    add_raster(_town(tmp_path, hashing_embedder), "town")
    dock = plugin.dock
    assert len(dock.selected_dbs()) == 2
    hits = search_by_typing(plugin, qtbot, "a pond with water")
    assert hits and all(Path(h.index).name == "neon.tilescribe.sqlite" for h in hits)  # never mixed in
    status = dock.statusLabel.text()
    assert "town.tilescribe.sqlite" in status and "another embedding model" in status, status
    assert "--" not in status
    town_row = next(dock.indexList.item(i) for i in range(2) if dock.indexList.item(i).text().startswith("town"))
    assert "another embedding model" in town_row.text() or "another embedding model" in town_row.toolTip()
    assert "hashing-test" in town_row.toolTip()
    assert not town_row.icon().isNull()  # marked in the list
    # Ticked alone (the forest unticked with the keyboard), it is refused with the reason, in QGIS's words.
    neon_row = next(dock.indexList.item(i) for i in range(2) if dock.indexList.item(i) is not town_row)
    _click_row(qtbot, dock.indexList, neon_row)
    qtbot.keyClick(dock.indexList, Qt.Key_Space)
    assert dock.selected_dbs() == [town_row.data(Qt.UserRole)]
    wait_idle(plugin, qtbot)
    assert search_by_typing(plugin, qtbot, "a pond with water") == []
    status = dock.statusLabel.text()
    assert "hashing-test" in status and "another embedding model" in status and "--" not in status, status
    assert not [text for level, text in fake_iface.messages() if level >= 2], fake_iface.messages()
    # Indexed again with the dock's model (a newer run in the same file): searched along, the mark goes.
    from helpers import build_index

    build_index(Path(town_row.data(Qt.UserRole)), tmp_path / "town.tif", minilm, TOWN_CAPTIONS, tile_size=64)[0].close()
    qtbot.keyClick(dock.indexList, Qt.Key_Space)  # the forest ticked again
    wait_idle(plugin, qtbot)
    hits = search_by_typing(plugin, qtbot, "a pond with water")
    assert {Path(h.index).name for h in hits} == {"neon.tilescribe.sqlite", "town.tilescribe.sqlite"}
    assert "Left out" not in dock.statusLabel.text() and town_row.icon().isNull()


def _layers_named(project, prefix: str):
    return [layer for layer in project.mapLayers().values() if layer.name().startswith(prefix)]


def test_results_kept_as_a_layer_outlive_clear_new_searches_and_reopening(plugin_on_shared_worker, fake_iface,
                                                                          captioned_index, minilm, add_raster,
                                                                          qtbot, tmp_path):
    """Issue 20 item 5: the hits of a search over every index, kept as one layer of the project (rank, score,
    caption, raster, index, rank labels) in a GeoPackage beside the project file: Clear and a new search
    leave it, saving keeps it, reopening shows it whole; the dock's own highlight layer is never saved."""
    from qgis.core import QgsProject, QgsVectorLayer
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    project = QgsProject.instance()
    add_raster(captioned_index, "neon")
    add_raster(_town(tmp_path, minilm), "town")
    folder = tmp_path / "survey"
    folder.mkdir()
    assert project.write(str(folder / "survey.qgz"))
    dock = plugin.dock
    assert not dock.keepButton.isEnabled()  # nothing to keep yet
    hits = search_by_typing(plugin, qtbot, "a pond with water")
    assert len(hits) == 8
    qtbot.mouseClick(dock.keepButton, Qt.LeftButton)
    [kept] = _layers_named(project, "TileScribe: ")
    assert kept.name() == "TileScribe: a pond with water" and kept.providerType() == "ogr"
    assert Path(kept.source().split("|")[0]) == folder / "tilescribe_kept.gpkg"
    assert kept.featureCount() == 8 and kept.crs() == plugin.search.results.layer().crs()
    fields = set(kept.fields().names())
    assert {"rank", "score", "caption", "raster", "index", "tile_id"} <= fields, fields
    rows = sorted(kept.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in rows] == list(range(1, 9)) and "pond" in rows[0]["caption"]
    assert {Path(f["index"]).name for f in rows} == {"neon.tilescribe.sqlite", "town.tilescribe.sqlite"}
    assert all(f["raster"].endswith((".tif",)) for f in rows)
    assert kept.labelsEnabled() and kept.labeling().settings().fieldName == "rank"
    assert any("Kept 8 results" in text for text in bar_texts(fake_iface.bar))

    qtbot.mouseClick(dock.clearButton, Qt.LeftButton)  # Clear: the kept layer stays
    assert plugin.search.results.layer() is None and project.mapLayer(kept.id()) is kept
    # The town unticked (its row clicked, Space): one index searched alone, its file still recorded.
    town_row = next(dock.indexList.item(i) for i in range(2) if dock.indexList.item(i).text() == "town")
    _click_row(qtbot, dock.indexList, town_row)
    qtbot.keyClick(dock.indexList, Qt.Key_Space)
    assert len(search_by_typing(plugin, qtbot, "a dirt road")) == 4  # a new search: both layers
    qtbot.mouseClick(dock.keepButton, Qt.LeftButton)
    second = next(layer for layer in _layers_named(project, "TileScribe: ") if layer.id() != kept.id())
    assert second.name() == "TileScribe: a dirt road" and second.featureCount() == 4
    assert {Path(f["index"]).name for f in second.getFeatures()} == {"neon.tilescribe.sqlite"}
    assert len(_layers_named(project, "TileScribe results")) == 1 and project.mapLayer(kept.id()) is kept

    path = str(folder / "survey.qgz")
    assert project.write(path)  # saved while the dock's results are shown
    project.clear()
    assert project.read(path)
    qtbot.wait(50)
    names = sorted(layer.name() for layer in project.mapLayers().values())
    assert names == ["TileScribe: a dirt road", "TileScribe: a pond with water", "neon", "town"], names
    reopened = _layers_named(project, "TileScribe: a pond")[0]
    assert reopened.isValid() and reopened.featureCount() == 8 and reopened.labelsEnabled()
    wait_idle(plugin, qtbot)
    assert search_by_typing(plugin, qtbot, "a pond with water")
    assert len(_layers_named(project, "TileScribe results")) == 1  # one scratch layer, never a second
    assert len(_layers_named(project, "TileScribe: ")) == 2
    del reopened, kept, second
    check = QgsVectorLayer(f"{folder / 'tilescribe_kept.gpkg'}|layername=a_pond_with_water", "check", "ogr")
    assert check.featureCount() == 8


def test_results_kept_in_a_project_without_a_file_are_a_named_memory_layer(plugin_on_shared_worker, fake_iface,
                                                                           captioned_index, add_raster, qtbot):
    """Without a project file there is nowhere 'beside the project': the kept layer is a named memory layer
    that QGIS asks to save on quit (the dock's own scratch layer is exempt), and the message says how."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    add_raster(captioned_index, "neon")
    assert len(search_by_typing(plugin, qtbot, "a dirt road")) == 4
    qtbot.mouseClick(plugin.dock.keepButton, Qt.LeftButton)
    [kept] = _layers_named(QgsProject.instance(), "TileScribe: ")
    assert kept.providerType() == "memory" and kept.featureCount() == 4
    assert kept.customProperty("skipMemoryLayersCheck") is None  # QGIS asks before losing it
    assert {Path(f["index"]).name for f in kept.getFeatures()} == {"neon.tilescribe.sqlite"}
    assert any("Make Permanent" in text for text in bar_texts(fake_iface.bar))
    qtbot.mouseClick(plugin.dock.clearButton, Qt.LeftButton)
    assert QgsProject.instance().mapLayer(kept.id()) is kept


def test_the_project_index_of_several_rasters_has_no_run_to_pick(plugin_on_shared_worker, fake_iface, shared_data,
                                                                 minilm, add_raster, qtbot, tmp_path):
    """Bugs seen in the real QGIS while the Index dialog queued several layers into the project index: the Run
    box offered one run per raster (identical labels) and picking one did nothing; each layer indexed said
    'survey.tilescribe.sqlite has a newer run … The dock still searches run 1' (another raster's run) over
    the queue's progress and Cancel; Inspect read the Run box's run only, so a click on the other raster
    found 'No indexed tile … here'."""
    from conftest import NEON, TILE_CAPTIONS
    from helpers import build_index
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsPointXY, QgsProject

    plugin = plugin_on_shared_worker
    neon_raster = tmp_path / "neon.tif"
    shutil.copy(shared_data / NEON, neon_raster)
    town = _town(tmp_path, minilm)
    db = tmp_path / "survey.tilescribe.sqlite"  # what the Index dialog writes for several layers
    build_index(db, neon_raster, minilm, TILE_CAPTIONS, tile_size=200)[0].close()
    neon = add_raster(neon_raster, "neon")
    plugin.dock.open_index_file(str(db))
    wait_idle(plugin, qtbot)
    combo = plugin.dock.runCombo
    assert combo.count() == 1 and combo.isEnabled() is False  # one raster, one run
    build_index(db, town, minilm, TOWN_CAPTIONS, tile_size=64)[0].close()  # the queue's next layer
    plugin.search.offer_index(str(db), "town is indexed in survey.tilescribe.sqlite.")  # as its task ends
    wait_idle(plugin, qtbot)
    assert not [text for text in bar_texts(fake_iface.bar) if "newer run" in text], bar_texts(fake_iface.bar)
    assert combo.count() == 1 and not combo.isEnabled() and "2 rasters" in combo.currentText()
    assert "several rasters" in combo.toolTip() and plugin.dock.current_run() is None
    hits = search_by_typing(plugin, qtbot, "a pond with water")
    assert {Path(hit.raster).name for hit in hits} == {"neon.tif", "town.tif"}
    # Inspect on each raster of the project index finds its tile.
    canvas = fake_iface.canvas
    to_map = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:3857"), neon.crs(), QgsProject.instance())
    pond = to_map.transform(QgsPointXY(TOWN_ORIGIN[0] + 96 * 10, TOWN_ORIGIN[1] - 96 * 10))
    plugin.inspect_action.trigger()
    inside_neon = QgsPointXY(neon.extent().xMinimum() + neon.extent().width() * 0.75,
                             neon.extent().yMinimum() + neon.extent().height() * 0.75)
    for at, tile in ((inside_neon, "200x200"), (pond, "64_64_64x64")):
        canvas.setCenter(at)
        canvas.refresh()
        qtbot.wait(50)
        click_canvas(qtbot, canvas, at)
        wait_idle(plugin, qtbot)
        dialog = plugin.captions_dialog
        assert dialog is not None and dialog.isVisible(), bar_texts(fake_iface.bar)
        assert tile in dialog.titleLabel.text(), (dialog.titleLabel.text(), bar_texts(fake_iface.bar))
    plugin.inspect_action.trigger()
