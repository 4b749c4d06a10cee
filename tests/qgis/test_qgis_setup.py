"""'Set up TileScribe' in QGIS: the offer in the dock, the index and settings dialogs, the real
QgsTask (failure, cancel), removal. A whole setup from the ZIP, clicked through in the real QGIS
application, is tests/qgis/test_qgis_gui_smoke.py's first-run test (`make gui-first-run`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup_ctl(plugin, tmp_path):
    """The plugin's EnvironmentSetup aimed at a throw-away profile, with no `make setup` .venv."""
    ctl = plugin.environment_setup
    ctl.venv = tmp_path / "profile" / "tilescribe" / "venv"
    ctl.checkout_python = tmp_path / "no-checkout" / "python"
    ctl.refresh()
    return ctl


def mouse_click(plugin, button) -> None:
    """A real mouse press and release on the button, as a user's click (the dock shown first)."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtTest import QTest

    plugin.dock.setUserVisible(True)
    assert button.isVisible() and button.isEnabled(), button.text()
    QTest.mouseClick(button, Qt.LeftButton)


def fake_ready_venv(ctl) -> Path:
    from tilescribe.plugin.bootstrap.builds import MachineFacts, choose_build
    from tilescribe.plugin.bootstrap.installer import write_stamp
    from tilescribe.plugin.bootstrap.spec import load_spec

    (ctl.venv / "bin").mkdir(parents=True)
    (ctl.venv / "bin" / "python").write_text("")
    (ctl.venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    spec = load_spec(ctl.plugin_dir)
    write_stamp(ctl.venv, spec, choose_build(MachineFacts("Linux", "x86_64"), spec), {"tiles": 4})
    return ctl.venv


def test_offer_rules():
    from tilescribe.plugin.qgis.setup_task import OFFER_INCOMPLETE, OFFER_MISSING, offer_text

    assert offer_text("missing", False, False) == OFFER_MISSING
    assert offer_text("incomplete", False, True) == OFFER_INCOMPLETE  # ours, broken: repair it
    assert offer_text("missing", False, True) is None  # `make setup`'s .venv is used
    assert offer_text("missing", True, False) is None  # the user named a Python
    assert offer_text("ready", False, False) is None


def test_default_worker_python_prefers_a_checked_environment(tmp_path, monkeypatch):
    from tilescribe.plugin.qgis import settings

    def python_in(venv: Path) -> Path:
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text("")
        return venv / "bin" / "python"

    managed = tmp_path / "profile" / "tilescribe" / "venv"
    monkeypatch.setattr(settings, "managed_environment", lambda: managed)
    plugin_dir = tmp_path / "checkout"
    made = python_in(managed)
    assert settings.default_worker_python(plugin_dir) == made  # a ZIP install: the only one there is
    checkout = python_in(plugin_dir / ".venv")
    assert settings.default_worker_python(plugin_dir) == checkout  # a cancelled setup: `make setup`'s wins
    (managed / "tilescribe-environment.json").write_text("{}")
    assert settings.default_worker_python(plugin_dir) == made  # checked: the one Set up TileScribe made


def test_dock_offers_setup_and_the_dialog_says_what_and_how_long(setup_ctl, plugin):
    from qgis.PyQt.QtWidgets import QDialogButtonBox

    from tilescribe.plugin.qgis.setup_task import OFFER_MISSING

    [banner] = setup_ctl.banners
    assert banner.isVisibleTo(plugin.dock) and banner.label.text() == OFFER_MISSING
    # one estimate from the steps' measured seconds, not "a few minutes"
    assert banner.label.text().endswith("about 19 minutes, most of it compiling llama.cpp for this CPU.")
    mouse_click(plugin, banner.button)
    dialog = setup_ctl.dialog
    assert dialog is not None and dialog.isVisible()
    plan = dialog.plan_label.text()
    assert "torch 2.13.0 for the CPU (about 200 MB)" in plan and "sentence-transformers" in plan
    from tilescribe.plugin.bootstrap.plan import CACHED, estimate

    assert dialog.time_label.text().startswith(f"Time: {estimate(dialog.prep.steps)} (measured on 2 cores).")
    [llama] = [step for step in dialog.prep.steps if step.name == "llama"]
    compiles = "compiling llama.cpp for this CPU" in dialog.time_label.text()
    assert compiles == (CACHED not in llama.title) and "minute" in dialog.time_label.text()
    assert str(setup_ctl.venv) in dialog.intro.text()
    assert dialog.buttons.button(QDialogButtonBox.Ok).text() == "Set up"
    assert Path(dialog.pythonFile.filePath()).name.startswith("python3")  # QGIS's own Python, found
    assert not dialog.gpuCheck.isEnabled()  # no GPU on this machine
    dialog.reject()
    assert setup_ctl.task is None


def test_index_dialog_offers_setup(setup_ctl, plugin, add_raster, tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from rasters import write_raster

    add_raster(write_raster(tmp_path / "r.tif", width=64, height=64))
    dialog = plugin.index_layer()
    banners = [item.widget() for item in dialog.messageBar.items() if item.widget() is not None]
    assert [b.objectName() for b in banners] == ["TileScribeSetupBanner"]
    dialog.reject()


def test_settings_dialog_shows_the_environment_and_removes_it(setup_ctl, plugin, monkeypatch):
    from dataclasses import replace

    from qgis.PyQt.QtWidgets import QMessageBox

    from tilescribe.plugin.qgis.settings import read_settings, write_settings

    venv = fake_ready_venv(setup_ctl)
    write_settings(replace(read_settings(), environment=str(venv)))
    dialog = plugin.open_settings()
    [row] = setup_ctl.rows
    assert row.label.text() == f"Ready: {venv}" and row.setupButton.text() == "Repair…"
    assert not setup_ctl.banners[0].isVisibleTo(plugin.dock)
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.Yes)
    mouse_click(plugin, row.removeButton)
    assert not venv.exists() and read_settings().environment == ""
    assert row.label.text() == "Not set up yet" and not row.removeButton.isEnabled()
    assert setup_ctl.banners[0].isVisibleTo(plugin.dock)  # offered again
    dialog.reject()


def test_a_finished_setup_becomes_the_workers_python(setup_ctl, plugin, fake_iface):
    """What the task hands over at the end (its run is the slow test's): settings, offer, message."""
    from dataclasses import replace

    from qgis.core import Qgis

    from tilescribe.plugin.bootstrap.installer import SetupResult
    from tilescribe.plugin.qgis.settings import read_settings, write_settings
    from tilescribe.plugin.qgis.tasks import TaskResult

    write_settings(replace(read_settings(), worker_python="/opt/other/python"))
    venv = fake_ready_venv(setup_ctl)
    setup_ctl._done(TaskResult(SetupResult(venv, venv / "bin" / "python", {}, "cpu", {"seconds": 9.5}, 60.0,
                                           venv.parent / "setup.log")))
    settings = read_settings()
    assert settings.environment == str(venv) and settings.worker_python == ""
    assert settings.python() == venv / "bin" / "python"
    level, text = fake_iface.messages()[-1]
    assert level == Qgis.Success and "in 9.5 s" in text and "replaces the Python set before (/opt/other/python)" in text
    assert not setup_ctl.banners[0].isVisibleTo(plugin.dock)


def test_a_failed_setup_shows_the_log_tail_and_its_path(setup_ctl, fake_iface, wait_task):
    from qgis.core import Qgis

    from tilescribe.plugin.bootstrap.installer import SetupOptions

    task = setup_ctl.start(SetupOptions(setup_ctl.plugin_dir, setup_ctl.venv.parents[1], Path("/bin/true")))
    result = wait_task(task, 60)
    assert result.error is not None and setup_ctl.task is None
    box = setup_ctl.failure
    assert box.windowTitle() == "Set up TileScribe failed"
    assert "/bin/true is not a Python 3.9 or newer" in box.text()
    log = setup_ctl.venv.parent / "setup.log"
    assert f"The whole log: {log}" in box.text() and log.is_file()
    assert "Creating the environment" in box.detailedText()
    assert any(level == Qgis.Warning and "Set up TileScribe failed" in text for level, text in fake_iface.messages())
    box.close()


def test_cancel_stops_pip_and_a_repair_is_offered(setup_ctl, wait_task, qtbot):
    from tilescribe.plugin.bootstrap.installer import SetupOptions
    from tilescribe.plugin.qgis.setup_task import OFFER_INCOMPLETE

    task = setup_ctl.start(SetupOptions(setup_ctl.plugin_dir, setup_ctl.venv.parents[1], Path("/usr/bin/python3"),
                                        want_gpu=False))
    qtbot.waitUntil(lambda: "torch" in setup_ctl.banners[0].label.text(), timeout=120_000)
    assert not setup_ctl.banners[0].button.isEnabled()  # the banner shows progress while it runs
    start = time.monotonic()
    task.cancel()
    result = wait_task(task, 60)
    assert time.monotonic() - start < 30
    assert result.cancelled and setup_ctl.failure.windowTitle() == "Set up TileScribe stopped"
    assert setup_ctl.banners[0].label.text() == OFFER_INCOMPLETE  # the venv is there, unchecked
    setup_ctl.failure.close()
