"""The dock follows the project (issue 20 item 6), driven by real Qt events: Project > Close,
save and reopen, the status line's wording, the offers and the Index dialog's choices."""

from __future__ import annotations

import pytest
from gui_events import bar_texts, search_by_typing, wait_idle

pytestmark = [pytest.mark.qgis, pytest.mark.slow]


def _results_layers(project):
    return [layer for layer in project.mapLayers().values() if layer.name().startswith("TileScribe results")]


def test_project_close_resets_the_dock(plugin_on_shared_worker, captioned_index, add_raster, qtbot):
    """Bug: Project > Close left the old results, status line and enabled buttons."""
    from qgis.core import QgsProject

    plugin = plugin_on_shared_worker
    add_raster(captioned_index)
    dock = plugin.dock
    assert search_by_typing(plugin, qtbot, "a dirt road")
    assert dock.exportButton.isEnabled() and dock.statusLabel.text()
    QgsProject.instance().clear()  # what Project > Close (and New) does
    qtbot.wait(50)
    assert dock.resultsList.count() == 0 and dock.hits == []
    assert dock.statusLabel.text() == ""
    assert not any(b.isEnabled() for b in (dock.zoomAllButton, dock.exportButton, dock.clearButton))
    assert plugin.search.outcome is None and plugin.search.results.layer() is None
    assert not _results_layers(QgsProject.instance())


def test_saved_project_keeps_no_empty_results_layer(plugin_on_shared_worker, captioned_index, add_raster,
                                                   qtbot, tmp_path):
    """Bug: a project saved with results shown stored an empty results layer that reopened empty, and
    the next search added a second one. The scratch layer is not saved; the results stay on screen."""
    from qgis.core import QgsProject

    plugin = plugin_on_shared_worker
    project = QgsProject.instance()
    add_raster(captioned_index)
    assert search_by_typing(plugin, qtbot, "a dirt road")
    path = str(tmp_path / "saved.qgz")
    assert project.write(path)
    qtbot.wait(50)
    # Saving does not take the results off the map nor out of the list.
    assert len(_results_layers(project)) == 1 and plugin.search.results.layer() is not None
    assert plugin.dock.resultsList.count() > 0
    project.clear()
    assert project.read(path)
    qtbot.wait(50)
    assert not _results_layers(project), [layer.name() for layer in project.mapLayers().values()]
    assert [layer.name() for layer in project.mapLayers().values()] == ["neon"]
    wait_idle(plugin, qtbot)
    assert search_by_typing(plugin, qtbot, "a pond with dark water")
    assert len(_results_layers(project)) == 1


def test_one_result_is_singular_and_the_extent_filter_is_named(plugin_on_shared_worker, fake_iface, captioned_index,
                                                                add_raster, qtbot):
    """Bugs: "1 results" in the status line; the extent filter was not mentioned there."""
    from qgis.PyQt.QtCore import QPoint, Qt

    plugin = plugin_on_shared_worker
    layer = add_raster(captioned_index)
    dock = plugin.dock
    dock.kSpin.setValue(1)
    assert len(search_by_typing(plugin, qtbot, "a dirt road")) == 1
    status = dock.statusLabel.text()
    assert status.startswith("1 result for") and "1 results" not in status, status
    assert "extent" not in status
    fake_iface.canvas.setExtent(layer.extent())
    dock.setUserVisible(True)
    qtbot.waitUntil(dock.extentCheck.isVisible)
    qtbot.mouseClick(dock.extentCheck, Qt.LeftButton, pos=dock.extentCheck.rect().bottomLeft() + QPoint(6, -6))
    assert dock.extentCheck.isChecked()
    dock.kSpin.setValue(3)
    assert len(search_by_typing(plugin, qtbot, "a dirt road")) == 3
    status = dock.statusLabel.text()
    assert status.startswith("3 results for") and "in the current map extent" in status, status


def test_plural_wording_helpers():
    """"1 tiles" in a run's label and in the indexing summary."""
    from tilescribe.plugin.qgis.indexing import IndexOutcome
    from tilescribe.plugin.qgis.runs import RunChoice

    run = RunChoice("/tmp/neon.tilescribe.sqlite", 1, "test", 200, 1, 1, "2026-01-01 10:00", "", "", True)
    assert "1 tile," in run.label() and "1 tiles" not in run.label(), run.label()
    outcome = IndexOutcome("neon", "/tmp/neon.tilescribe.sqlite", 1, 1, 1, 1, 0, False, False, 1, [], "")
    assert "1 of 1 tile captioned" in outcome.summary() and "1 empty tile skipped" in outcome.summary()
