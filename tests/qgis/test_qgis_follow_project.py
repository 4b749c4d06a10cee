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


def test_a_reopened_project_saved_with_results_can_be_saved_again(plugin_on_shared_worker, captioned_index,
                                                                  add_raster, qtbot, tmp_path):
    """Bug (a crash, seen in the real QGIS): a project saved while results were shown, opened again (its
    stale results layer dropped) and saved crashed QGIS in QgsSnappingConfig::writeProject: the layer was
    removed from inside readProject, and the snapping settings kept a freed pointer to it."""
    from qgis.core import QgsProject, QgsVectorLayer
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    project = QgsProject.instance()
    add_raster(captioned_index)
    assert search_by_typing(plugin, qtbot, "a dirt road")
    qtbot.mouseClick(plugin.dock.keepButton, Qt.LeftButton)  # a vector layer that stays, snapping settings and all
    path = str(tmp_path / "saved.qgz")
    assert project.write(path)
    project.clear()
    assert project.read(path)
    qtbot.waitUntil(lambda: not _results_layers(project), timeout=2000)
    vectors = [layer for layer in project.mapLayers().values() if isinstance(layer, QgsVectorLayer)]
    assert [layer.name() for layer in vectors] == ["TileScribe: a dirt road"]
    assert len(project.snappingConfig().individualLayerSettings()) == len(vectors)
    assert project.write(path)  # Ctrl+S: crashed here
    assert project.read(path) and len(project.mapLayers()) == 2


def test_indexing_that_ends_after_project_close_leaves_the_new_project_alone(plugin_on_shared_worker, fake_iface,
                                                                           neon_raster, add_raster, qtbot):
    """Bug (seen in the real QGIS): Project > Close while the Index dialog's job ran; when it ended, the
    closed project's index was opened in the dock of the new, empty project."""
    from qgis.core import QgsProject
    from qgis.PyQt.QtCore import Qt

    plugin = plugin_on_shared_worker
    add_raster(neon_raster)
    wait_idle(plugin, qtbot)
    plugin.index_action.trigger()
    dialog = plugin.index_dialog
    qtbot.waitUntil(dialog.isVisible)
    qtbot.mouseClick(dialog.testRadio, Qt.LeftButton)
    dialog.tileSizeSpin.setValue(200)
    dialog.variantsSpin.setValue(1)
    qtbot.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    assert plugin.runner.tasks
    QgsProject.instance().clear()  # what Project > Close (and New) does, while the task runs
    wait_idle(plugin, qtbot, 240)
    assert any(text.startswith("Indexed neon") for text in bar_texts(fake_iface.bar)), bar_texts(fake_iface.bar)
    assert plugin.dock.selected_dbs() == [] and plugin.dock.current_db() is None
    assert [plugin.dock.indexList.item(i).text() for i in range(plugin.dock.indexList.count())] == [
        "No index: click Index layer"]
    assert not [text for text in bar_texts(fake_iface.bar) if "still searches" in text]


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


def _index_finished(plugin, tmp_path, captioned_index, cancelled: bool = False):
    """An indexing run of another raster ends (the task's callback, as the task manager calls it), into
    an index the dock does not search yet."""
    import shutil

    from tilescribe.plugin.qgis.indexing import IndexOutcome, IndexRequest
    from tilescribe.plugin.qgis.tasks import TaskResult
    from tilescribe.plugin.core.captioning.factory import CaptionerSettings

    db = tmp_path / "other.tilescribe.sqlite"
    shutil.copy(captioned_index.with_name("neon.tilescribe.sqlite"), db)
    request = IndexRequest("other", str(tmp_path / "other.tif"), str(db), CaptionerSettings())
    outcome = IndexOutcome("other", str(db), 1, 4, 2 if cancelled else 4, 0, 0, cancelled, False, 2 if cancelled else 4)
    plugin._index_done(request, TaskResult(value=outcome))
    return db


def test_search_new_index_offer_stays_until_the_user_acts(plugin_on_shared_worker, fake_iface, captioned_index,
                                                          add_raster, qtbot, tmp_path):
    """Bug: the "Search <new index>" offer went after a few seconds: the success message's countdown popped it."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QPushButton

    plugin = plugin_on_shared_worker
    add_raster(captioned_index)
    wait_idle(plugin, qtbot)
    db = _index_finished(plugin, tmp_path, captioned_index)
    fake_iface.bar.pushInfo("Task complete", "TileScribe: indexing other")  # what QGIS adds (5 s), then we pop it
    offered = lambda: [t for t in bar_texts(fake_iface.bar) if "still searches" in t]  # noqa: E731
    assert offered(), bar_texts(fake_iface.bar)
    qtbot.wait(9_000)  # past QGIS's 5 s notice and our 8 s success message
    assert offered(), bar_texts(fake_iface.bar)
    button = next(b for b in fake_iface.bar.findChildren(QPushButton) if b.text() == f"Search {db.name}")
    qtbot.mouseClick(button, Qt.LeftButton)
    assert plugin.dock.selected_dbs() == [str(db.resolve())]
    assert not offered()


def test_cancelled_run_is_not_announced_as_indexed(plugin_on_shared_worker, fake_iface, captioned_index,
                                                  add_raster, qtbot, tmp_path):
    """Bug: a cancelled indexing run was announced as "other is indexed in …"."""
    plugin = plugin_on_shared_worker
    add_raster(captioned_index)
    wait_idle(plugin, qtbot)
    _index_finished(plugin, tmp_path, captioned_index, cancelled=True)
    texts = " | ".join(bar_texts(fake_iface.bar))
    assert "is indexed" not in texts and "Indexed other" not in texts, texts
    assert "stopped" in texts and "2 of 4 tiles" in texts, texts


def test_index_dialog_starts_from_the_saved_captioner_not_the_test_model(plugin, rgb_raster, add_raster, qtbot,
                                                                         monkeypatch):
    """Bug: once a layer was indexed with the Test model, the Index dialog ticked it again for the next
    layer (placeholder captions by accident). The saved choice (Settings) is where each dialog starts."""
    from qgis.PyQt.QtCore import QPoint, Qt
    from tilescribe.plugin.qgis.settings import CAPTIONER_LOCAL, read_settings

    started = []
    monkeypatch.setattr(plugin, "start_index", started.append)  # the run itself is tested in test_qgis_index
    add_raster(rgb_raster, "rgb")
    assert read_settings().captioner == CAPTIONER_LOCAL
    plugin.index_action.trigger()
    dialog = plugin.index_dialog
    qtbot.waitUntil(dialog.testRadio.isVisible)
    assert dialog.localRadio.isChecked()
    qtbot.mouseClick(dialog.testRadio, Qt.LeftButton, pos=QPoint(6, dialog.testRadio.height() // 2))
    assert dialog.testRadio.isChecked()
    qtbot.mouseClick(dialog.buttonBox.button(dialog.buttonBox.Ok), Qt.LeftButton)
    assert len(started) == 1 and started[0].captioner.test_model, started
    plugin.index_action.trigger()  # the next layer
    dialog = plugin.index_dialog
    qtbot.waitUntil(dialog.testRadio.isVisible)
    assert not dialog.testRadio.isChecked() and dialog.localRadio.isChecked()
    assert read_settings().captioner == CAPTIONER_LOCAL
