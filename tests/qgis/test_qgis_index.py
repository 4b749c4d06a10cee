"""Index layer with the real tiny test model: cancelled, crashed, resumed to completion, then searched."""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest
from gui_events import bar_texts, newest_task, search_by_typing

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

# The random-weight model fills every string to its maximum length (seconds per tile on 2 cores):
# one variant per tile and 4 tiles keep this test near half a minute.
VARIANTS = 1


def _tile_counts(db) -> dict:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("select status, count(*) from tiles group by status").fetchall())


def _interrupt_after_first_tile(monkeypatch, action):
    """Make the index task call action(task) once, when the worker reports the first tile it captioned."""
    from tilescribe.plugin.qgis.tasks import IndexTask

    original = IndexTask._event
    fired = []

    def event(task, kind, data):
        original(task, kind, data)
        if kind == "progress" and data.get("captioned_now", 0) >= 1 and not fired:
            fired.append(data["done"])
            action(task)

    monkeypatch.setattr(IndexTask, "_event", event)


def _index_from_the_dialog(plugin, wait_task):
    """What the user does: Index layer, test model, 200 px tiles, Index; then wait for the task."""
    plugin.index_action.trigger()
    dialog = plugin.index_dialog
    dialog.testRadio.setChecked(True)
    dialog.tileSizeSpin.setValue(200)
    dialog.variantsSpin.setValue(VARIANTS)
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    task = newest_task(plugin)
    progress = []  # what the task manager's progress bar showed
    task.progressChanged.connect(progress.append)
    return progress, wait_task(task, 240)


def _cancel_then_crash(plugin, fake_iface, wait_task, monkeypatch, db, qgis_app) -> int:
    """Cancel after one tile, then kill the worker after the next: returns the tiles kept."""
    from qgis.core import Qgis

    _interrupt_after_first_tile(monkeypatch, lambda task: task.cancel())  # the task manager's Cancel
    _, cancelled = _index_from_the_dialog(plugin, wait_task)
    fake_iface.bar.pushInfo("Task complete", "TileScribe: indexing neon")  # what QGIS adds for a long task
    qgis_app.processEvents()
    assert [t for t in bar_texts(fake_iface.bar) if t.startswith("Task complete")] == []
    assert cancelled.value.cancelled and _tile_counts(db)["done"] == cancelled.value.done >= 1
    level, text = fake_iface.messages()[-1]
    assert level == Qgis.Warning and "stopped" in text and "Run Index layer again to continue" in text

    worker = plugin.client().pid
    _interrupt_after_first_tile(monkeypatch, lambda task: os.kill(worker, signal.SIGKILL))  # a native crash
    _, crashed = _index_from_the_dialog(plugin, wait_task)
    assert crashed.error is not None
    level, text = fake_iface.messages()[-1]
    assert level == Qgis.Critical
    assert "worker stopped unexpectedly (killed by SIGKILL" in text and "restarts the worker" in text
    assert "during 'index', after tile " in text and " tiles finished)" in text  # which tile was in flight
    assert "Tiles captioned so far are kept in neon.tilescribe.sqlite" in text
    kept = _tile_counts(db)["done"]
    assert kept > cancelled.value.done  # the tile committed just before the kill survived it
    monkeypatch.undo()
    return kept


def test_interrupted_indexing_keeps_its_work_resumes_and_is_searchable(plugin, fake_iface, neon_raster, add_raster,
                                                                       qtbot, wait_task, monkeypatch, qgis_app):
    from qgis.core import Qgis

    add_raster(neon_raster)
    db = neon_raster.with_name("neon.tilescribe.sqlite")
    kept = _cancel_then_crash(plugin, fake_iface, wait_task, monkeypatch, db, qgis_app)

    progress, resumed = _index_from_the_dialog(plugin, wait_task)  # a fresh worker takes over
    assert resumed.error is None and progress[-1] == 100
    assert (resumed.value.done, resumed.value.captioned_now) == (4, 4 - kept)  # nothing redone
    assert _tile_counts(db) == {"done": 4}
    level, text = fake_iface.messages()[-1]
    assert level == Qgis.Success and "Indexed neon: 4 of 4 tiles captioned" in text and "placeholder" in text
    assert plugin.dock.isUserVisible() and plugin.dock.current_db() == str(db.resolve())
    # The earlier runs' "stopped" messages are gone, also once the success message times out.
    assert [t for t in bar_texts(fake_iface.bar) if "stopped" in t] == []
    fake_iface.bar.popWidget()
    assert [t for t in bar_texts(fake_iface.bar) if "stopped" in t] == []

    again = _run_directly(plugin, plugin.index_dialog.index_request)
    assert "4 of 4 tiles captioned, 0 in this run" in again.summary()

    search_by_typing(plugin, qtbot, "trees")
    highlight = plugin.search.results.layer()
    assert highlight.featureCount() == 4 and highlight.crs().authid() == "EPSG:32617"
    assert "test model" in plugin.dock.runCombo.currentText()
    note = plugin.dock.resultsList.item(0)  # said plainly, above the results
    assert note.text().startswith("Placeholder captions") and plugin.dock.resultsList.count() == 5


def _run_directly(plugin, request):
    """task.run() in the test's thread, then finished(), as Deepness's tests drive their tasks."""
    from tilescribe.plugin.qgis.tasks import IndexTask

    outcomes = []
    task = IndexTask(plugin.client(), request, outcomes.append)
    assert task.run() is True, task.result.error
    task.finished(True)
    return outcomes[0].value
