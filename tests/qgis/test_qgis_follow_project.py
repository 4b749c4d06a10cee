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
