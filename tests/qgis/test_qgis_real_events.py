"""The plugin as people use it, driven by real Qt events: typing, Enter, clicks on the canvas and buttons.

Each test asserts on what a user sees: list rows, the results layer, the canvas pixels, dialog text.
"""

from __future__ import annotations

import warnings

import pytest
from gui_events import (
    bar_texts,
    click_canvas,
    orange_pixels_on_outline,
    render_canvas,
    search_by_typing,
    wait_idle,
)

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

TILE_M = 20.0  # NEON: 200 px tiles of 10 cm


def _tile(layer, col: int, row: int):
    from qgis.core import QgsRectangle

    extent = layer.extent()
    x0, y1 = extent.xMinimum() + col / 10, extent.yMaximum() - row / 10
    return QgsRectangle(x0, y1 - TILE_M, x0 + TILE_M, y1)


def _shown_canvas(fake_iface, qgis_app, layer):
    canvas = fake_iface.canvas
    canvas.setExtent(layer.extent())
    canvas.refresh()
    render_canvas(qgis_app, canvas)
    return canvas


def test_inspect_click_on_the_canvas_finds_the_tile_then_similar(plugin_on_shared_worker, fake_iface, qgis_app,
                                                                 captioned_index, add_raster, qtbot):
    """Bug: the map point reached the task as a dangling reference (6.9e-310): no tile was ever found."""
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    layer = add_raster(captioned_index)
    canvas = _shown_canvas(fake_iface, qgis_app, layer)
    wait_idle(plugin, qtbot)
    toolbar_button = plugin.toolbar.widgetForAction(plugin.inspect_action)
    qtbot.mouseClick(toolbar_button, Qt.LeftButton)
    assert canvas.mapTool() is plugin.inspect_tool
    click_canvas(qtbot, canvas, _tile(layer, 200, 200).center())
    wait_idle(plugin, qtbot)
    assert not [text for text in bar_texts(fake_iface.bar) if "No indexed tile" in text]
    dialog = plugin.captions_dialog
    assert dialog is not None and dialog.isVisible() and "200_200_200x200" in dialog.titleLabel.text()
    assert "dark water of a small pond" in dialog.captionsView.toPlainText()

    qtbot.mouseClick(dialog.similarButton, Qt.LeftButton)
    wait_idle(plugin, qtbot)
    rows = [plugin.dock.resultsList.item(i).text() for i in range(plugin.dock.resultsList.count())]
    assert len(rows) == 3 and "similar to tile 200_200_200x200" in plugin.dock.statusLabel.text()
    assert plugin.search.results.layer().featureCount() == 3


def test_clear_takes_the_highlight_off_the_painted_map(plugin_on_shared_worker, fake_iface, qgis_app,
                                                      captioned_index, add_raster, qtbot):
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    layer = add_raster(captioned_index)
    canvas = _shown_canvas(fake_iface, qgis_app, layer)
    pond, road = _tile(layer, 200, 200), _tile(layer, 0, 200)
    plugin.dock.kSpin.setValue(1)
    search_by_typing(plugin, qtbot, "a dirt road")
    assert orange_pixels_on_outline(render_canvas(qgis_app, canvas), canvas, road) > 20
    search_by_typing(plugin, qtbot, "a pond with dark water")  # the next search redraws the highlight
    assert plugin.dock.resultsList.count() == 1
    image = render_canvas(qgis_app, canvas)
    assert orange_pixels_on_outline(image, canvas, pond) > 20
    assert orange_pixels_on_outline(image, canvas, road) < orange_pixels_on_outline(image, canvas, pond) / 2

    qtbot.mouseClick(plugin.dock.clearButton, Qt.LeftButton)
    assert plugin.dock.resultsList.count() == 0 and plugin.search.results.layer() is None
    assert orange_pixels_on_outline(render_canvas(qgis_app, canvas), canvas, pond) == 0


def test_results_layer_is_a_quiet_scratch_layer_and_exports_after_removal(plugin_on_shared_worker, qgis_app,
                                                                         captioned_index, add_raster, qtbot,
                                                                         tmp_path):
    """Quitting QGIS must not ask to save it; deleting it by hand must not block Export."""
    from qgis.core import QgsProject, QgsVectorLayer

    plugin = plugin_on_shared_worker
    add_raster(captioned_index)
    qtbot.wait(50)  # the layer tree marks the project modified one event-loop turn later
    QgsProject.instance().setDirty(False)
    search_by_typing(plugin, qtbot, "a pond")
    search_by_typing(plugin, qtbot, "a dirt road")  # the same layer, new features and name
    highlight = plugin.search.results.layer()
    assert highlight.customProperty("skipMemoryLayersCheck") == 1  # QGIS's "save scratch layers?" check
    qtbot.wait(50)
    assert not QgsProject.instance().isDirty()

    QgsProject.instance().removeMapLayer(highlight.id())  # the user deletes it in the Layers panel
    assert plugin.dock.resultsList.count() == 4 and plugin.dock.exportButton.isEnabled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = plugin.search.export(str(tmp_path / "r.gpkg"))
    assert path and not [w for w in caught if issubclass(w.category, DeprecationWarning)]
    written = QgsVectorLayer(f"{path}|layername=tilescribe_results")
    assert written.featureCount() == 4
    del written


def test_index_box_is_never_switched_under_the_user(plugin_on_shared_worker, fake_iface, captioned_index,
                                                   add_raster, qtbot, tmp_path):
    """An index job that ends offers its index with a button; the dock keeps searching the chosen one."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QPushButton
    from rasters import write_raster

    plugin = plugin_on_shared_worker
    add_raster(captioned_index)
    chosen = plugin.dock.current_db()
    search_by_typing(plugin, qtbot, "a pond")
    small = add_raster(write_raster(tmp_path / "small.tif", width=64, height=64), "small")
    dialog = plugin.index_layer()
    assert dialog.checked_layers() == [small]  # the active layer, ticked
    qtbot.mouseClick(dialog.testRadio, Qt.LeftButton)
    dialog.tileSizeSpin.setValue(64)
    dialog.variantsSpin.setValue(1)
    qtbot.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    wait_idle(plugin, qtbot, 240)

    small_db = str((tmp_path / "small.tilescribe.sqlite").resolve())
    # Every index was searched: the new one is searched along, the results on screen stay.
    assert set(plugin.dock.selected_dbs()) == {chosen, small_db} and plugin.dock.resultsList.count() == 4
    assert not [text for text in bar_texts(fake_iface.bar) if "still searches" in text]

    # Narrowed to the forest (the small index unticked with the keyboard), a new index is offered instead.
    view = plugin.dock.indexList
    row = next(view.item(i) for i in range(view.count()) if view.item(i).data(Qt.UserRole) == small_db)
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.visualItemRect(row).center())
    qtbot.keyClick(view, Qt.Key_Space)
    assert plugin.dock.current_db() == chosen and plugin.dock.resultsList.count() == 4
    plugin.search.offer_index(small_db, "small is indexed in small.tilescribe.sqlite.")
    assert plugin.dock.current_db() == chosen
    offer = next(text for text in bar_texts(fake_iface.bar) if "still searches neon.tilescribe.sqlite" in text)
    assert "small is indexed in small.tilescribe.sqlite" in offer
    button = next(b for b in fake_iface.bar.findChildren(QPushButton) if b.text() == "Search small.tilescribe.sqlite")
    qtbot.mouseClick(button, Qt.LeftButton)
    assert plugin.dock.current_db() == small_db
    assert plugin.dock.resultsList.count() == 0  # the list never shows another index's results
    wait_idle(plugin, qtbot)
    assert "test model" in plugin.dock.runCombo.currentText()
    QgsProject.instance().removeMapLayer(small.id())  # its index stays the chosen one
    assert plugin.dock.current_db() == small_db


def test_runs_are_listed_and_the_chosen_one_answers(plugin_on_shared_worker, shared_data, minilm, add_raster,
                                                    qtbot, tmp_path):
    """Bug: an index with two runs (another tile size) silently searched only the newest."""
    import shutil

    from conftest import NEON, TILE_CAPTIONS
    from helpers import build_index
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    raster = tmp_path / "neon.tif"
    shutil.copy(shared_data / NEON, raster)
    db = raster.with_name("neon.tilescribe.sqlite")
    build_index(db, raster, minilm, TILE_CAPTIONS, tile_size=200)[0].close()
    build_index(db, raster, minilm, [["a pond"]] * 16, tile_size=100)[0].close()
    add_raster(raster)
    wait_idle(plugin, qtbot)
    combo = plugin.dock.runCombo
    labels = [combo.itemText(i) for i in range(combo.count())]
    assert len(labels) == 2 and "100 px tiles, 16 tiles" in labels[0] and "200 px tiles, 4 tiles" in labels[1]
    assert combo.currentIndex() == 0 and combo.isEnabled()

    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key_Down)  # the older run, chosen with the keyboard
    assert "200 px" in combo.currentText()
    hits = search_by_typing(plugin, qtbot, "a dirt road")
    assert len(hits) == 4 and hits[0].tile_id == "0_200_200x200"
    assert f"run {plugin.dock.current_run().id} (" in plugin.dock.statusLabel.text()
    assert "200 px" in plugin.dock.statusLabel.text()
    box = next(plugin.search.results.layer().getFeatures()).geometry().boundingBox()
    assert abs(box.width() - TILE_M) < 1e-6


def test_edge_tiles_get_square_thumbnails_in_aligned_rows(plugin_on_shared_worker, minilm, add_raster, qtbot,
                                                          qgis_app, tmp_path):
    from helpers import build_index
    from rasters import write_raster

    plugin = plugin_on_shared_worker
    raster = write_raster(tmp_path / "strip.tif", width=128, height=72)  # the bottom row is 8 px tall
    captions = [["a red roof"], ["a green field"], ["a thin strip of road"], ["a thin strip of river"]]
    build_index(tmp_path / "strip.tilescribe.sqlite", raster, minilm, captions, tile_size=64)[0].close()
    add_raster(raster, "strip")
    search_by_typing(plugin, qtbot, "a road")
    listed = plugin.dock.resultsList
    qtbot.waitUntil(lambda: not plugin.dock.thumbnails_pending(), timeout=10000)
    sizes = {listed.item(i).icon().availableSizes()[0].height() for i in range(listed.count())}
    assert sizes == {72}  # edge tiles too: square pictures
    heights = {listed.visualItemRect(listed.item(i)).height() for i in range(listed.count())}
    assert len(heights) == 1


def test_messages_are_whole_and_go_when_they_no_longer_hold(plugin_on_shared_worker, fake_iface, qgis_app,
                                                           captioned_index, rgb_raster, add_raster, qtbot):
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QLabel

    plugin = plugin_on_shared_worker
    long_text = "Indexing stopped: " + "a long explanation of what happened and what to do next. " * 6
    plugin.messages.warning(long_text.strip())
    qtbot.wait(50)  # laid out
    label = fake_iface.bar.findChild(QLabel, "tilescribeMessageText")
    assert label.text() == long_text.strip()
    assert label.isVisible() and label.height() >= label.heightForWidth(label.width())  # every line shows

    # 'Choose an index first' goes once an index is chosen (through Open…, which starts beside the rasters).
    add_raster(rgb_raster, "rgb")
    qtbot.mouseClick(plugin.dock.searchButton, Qt.LeftButton)
    assert "Choose an index first" in plugin.dock.statusLabel.text()
    qtbot.mouseClick(plugin.dock.openIndexButton, Qt.LeftButton)
    dialog = plugin.dock.file_dialog
    assert dialog.isVisible() and dialog.directory().absolutePath() == str(rgb_raster.parent.resolve())
    dialog.selectFile(str(captioned_index.with_name("neon.tilescribe.sqlite")))
    dialog.accept()
    assert plugin.dock.current_db().endswith("neon.tilescribe.sqlite")
    assert "Choose an index first" not in plugin.dock.statusLabel.text()
    wait_idle(plugin, qtbot)


def test_index_dialog_problem_is_whole_and_goes_with_the_fix(plugin, fake_iface, qgis_app, rgb_raster, add_raster,
                                                            qtbot):
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QLabel

    add_raster(rgb_raster)
    dialog = plugin.index_layer()
    qtbot.mouseClick(dialog.localRadio, Qt.LeftButton)
    dialog.modelFile.setFilePath("")
    qtbot.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    qtbot.wait(50)  # laid out
    [text] = bar_texts(dialog.messageBar)
    assert text.startswith("Cannot index yet: Pick the GGUF model file") and text.endswith("or a server.")
    label = dialog.messageBar.findChild(QLabel, "tilescribeMessageText")
    assert label.isVisible() and label.height() >= label.heightForWidth(label.width())
    qtbot.mouseClick(dialog.testRadio, Qt.LeftButton)  # the choice that fixes it
    assert bar_texts(dialog.messageBar) == []
    dialog.reject()


def test_dock_placeholder_menu_and_settings_fields(plugin, fake_iface, qgis_app, qtbot):
    from tilescribe.plugin.qgis.dock import NO_INDEX

    plugin.dock_action.trigger()
    assert plugin.dock.indexList.item(0).text() == NO_INDEX and plugin.dock.indexList.count() == 1
    assert plugin.dock.current_db() is None
    menus = {call.args[0] for call in fake_iface.mock.addPluginToRasterMenu.call_args_list}
    assert menus == {"&TileScribe"} and not fake_iface.mock.addPluginToMenu.called
    dialog = plugin.open_settings()
    qtbot.wait(50)
    for field in (dialog.modelFile, dialog.mmprojFile, dialog.serverUrlEdit, dialog.pythonFile):
        assert field.height() >= field.sizeHint().height(), field.objectName()  # not squashed
    dialog.reject()
