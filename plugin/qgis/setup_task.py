"""'Set up TileScribe' in QGIS: offered where the worker environment is missing or incomplete, run
as a cancellable QgsTask (the same Installer as `python -m tilescribe.plugin.bootstrap`)."""

from __future__ import annotations

import traceback
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from qgis.core import Qgis, QgsTask
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import QApplication, QMessageBox

from ..bootstrap.builds import UnsupportedPlatform
from ..bootstrap.commands import SetupCancelled, SetupError
from ..bootstrap.installer import (INCOMPLETE, MISSING, READY, Installer, Preparation, SetupOptions,
                                   environment_state, prepare, remove_environment)
from ..bootstrap.plan import first_setup_estimate
from ..bootstrap.spec import SpecError, load_spec
from .messages import Messages
from .settings import PLUGIN_DIR, managed_environment, read_settings, venv_python, write_settings
from .setup_dialog import EnvironmentRow, OfferBanner, SetupDialog, failure_box
from .tasks import TaskResult, TaskRunner

OFFER_MISSING = ("TileScribe needs its own Python environment to caption and search: about 350 MB to "
                 f"download (1.3 GB on disk), {first_setup_estimate()}.")
OFFER_INCOMPLETE = ("TileScribe's Python environment is incomplete, or older than this plugin version: "
                    "Repair installs only what is missing.")


def offer_text(state: str, custom_python: bool, checkout_env: bool) -> Optional[str]:
    """Why to offer the setup, or None: a Python the user named, or `make setup`'s, is theirs to keep."""
    if custom_python or state == READY or (state == MISSING and checkout_env):
        return None
    return OFFER_MISSING if state == MISSING else OFFER_INCOMPLETE


class SetupTask(QgsTask):
    progressText = pyqtSignal(str)

    def __init__(self, options: SetupOptions, on_done: Callable[[TaskResult], None]):
        super().__init__("TileScribe: setting up the worker environment", QgsTask.CanCancel)
        self.options, self.on_done = options, on_done
        self.result = TaskResult()

    def run(self) -> bool:
        try:
            self.result.value = Installer(self.options, self._report, self.isCanceled).run()
        except SetupError as exc:
            self.result.error = exc
        except (SpecError, UnsupportedPlatform) as exc:
            self.result.error = SetupError(str(exc))
        except Exception as exc:  # a bug: show it rather than lose it in a thread
            self.result.error = SetupError(f"Set up stopped on an unexpected error: {exc!r}",
                                           traceback.format_exc(limit=6).splitlines())
        self.result.cancelled = self.isCanceled()
        return self.result.error is None

    def _report(self, percent: float, message: str) -> None:
        self.setProgress(percent)
        self.progressText.emit(f"{message} ({percent:.0f}%)")

    def finished(self, ok: bool) -> None:
        self.on_done(self.result)


class EnvironmentSetup(QObject):
    """Owns the offer banners, the setup dialog and the task; `stop_worker` runs before a removal
    and after a setup, so the next request starts the worker with the new environment."""

    def __init__(self, iface, runner: TaskRunner, messages: Messages, stop_worker: Callable[[], None],
                 venv: Optional[Path] = None, plugin_dir: Path = PLUGIN_DIR):
        super().__init__()
        self.iface, self.runner, self.messages, self.stop_worker = iface, runner, messages, stop_worker
        self.venv = Path(venv or managed_environment())
        self.plugin_dir = Path(plugin_dir)
        self.checkout_python = venv_python(self.plugin_dir / ".venv")
        self.task: Optional[SetupTask] = None
        self.dialog: Optional[SetupDialog] = None
        self.failure: Optional[QMessageBox] = None
        self.banners: list = []
        self.rows: list = []
        self._busy = ""

    # -- state ---------------------------------------------------------------------------

    def state(self) -> str:
        try:
            return environment_state(self.venv, load_spec(self.plugin_dir))
        except SpecError:
            return INCOMPLETE

    def offer(self) -> Optional[str]:
        return offer_text(self.state(), bool(read_settings().worker_python.strip()), self.checkout_python.is_file())

    def refresh(self) -> None:
        # A settings dialog is deleted when closed: its row goes with it (no slot runs while Qt deletes).
        self.rows = [row for row in self.rows if not sip.isdeleted(row)]
        text = self.offer()
        for banner in self.banners:
            banner.show_offer(text, self._busy)
        state = self.state()
        for row in self.rows:
            row.show_state(self._state_text(state), state != MISSING)

    def _state_text(self, state: str) -> str:
        if self._busy:
            return self._busy
        return {READY: f"Ready: {self.venv}", INCOMPLETE: f"Incomplete: {self.venv}"}.get(
            state, "Not set up yet" + (" (a `make setup` .venv is used)" if self.checkout_python.is_file() else ""))

    # -- hooks into the plugin's widgets ---------------------------------------------------

    def attach_dock(self, dock) -> OfferBanner:
        banner = OfferBanner(dock)
        dock.mainLayout.insertWidget(0, banner)
        banner.button.clicked.connect(lambda: self.open_dialog())
        self.banners.append(banner)
        self.refresh()
        return banner

    def attach_index_dialog(self, dialog) -> Optional[OfferBanner]:
        text = self.offer()
        if text is None:
            return None
        banner = OfferBanner(dialog)
        banner.show_offer(text, self._busy)
        banner.button.clicked.connect(lambda: self.open_dialog())
        dialog.messageBar.pushWidget(banner, Qgis.Warning)
        return banner

    def attach_settings_dialog(self, dialog) -> EnvironmentRow:
        row = EnvironmentRow(dialog)
        dialog.workerForm.addRow("Environment", row)
        row.setupButton.clicked.connect(lambda: self.open_dialog())
        row.removeButton.clicked.connect(lambda: self.remove(ask=True))
        self.rows.append(row)
        self.refresh()
        return row

    # -- set up, repair, remove -------------------------------------------------------------

    def options(self) -> SetupOptions:
        return SetupOptions(self.plugin_dir, self.venv.parents[1])

    def prepare(self, options: SetupOptions) -> Preparation:
        QApplication.setOverrideCursor(Qt.WaitCursor)  # a second or two: it asks the environment's Python
        try:
            return prepare(options)
        finally:
            QApplication.restoreOverrideCursor()

    def open_dialog(self) -> Optional[SetupDialog]:
        if self.task is not None:
            self.messages.push("Set up TileScribe is already running: see the task manager (bottom right).")
            return None
        try:
            dialog = SetupDialog(self.options(), self.prepare, self.iface.mainWindow())
        except (SetupError, SpecError, UnsupportedPlatform) as exc:
            self.messages.warning(f"Cannot set up TileScribe here: {exc}")
            return None
        if self.dialog is not None:
            self.dialog.deleteLater()
        self.dialog = dialog
        dialog.accepted.connect(lambda: self.start(dialog.options()))
        dialog.open()
        return dialog

    def start(self, options: SetupOptions) -> SetupTask:
        task = SetupTask(options, self._done)
        task.progressText.connect(self._progress)
        self.task = task
        self._progress("Set up TileScribe is starting")
        self.messages.push("Setting up TileScribe's environment in the background: progress and Cancel are in "
                           "the task manager (bottom right).")
        return self.runner.start(task)

    def _progress(self, text: str) -> None:
        self._busy = text
        self.refresh()

    def _done(self, result: TaskResult) -> None:
        self.task, self._busy = None, ""
        if result.error is None:
            self.stop_worker()  # the next request starts the worker from the new environment
            settings = read_settings()
            # What the user just set up is what the worker uses, also instead of a Python named before.
            write_settings(replace(settings, environment=str(result.value.venv), worker_python=""))
            check = result.value.check or {}
            replaced = f" It replaces the Python set before ({settings.worker_python})." \
                if settings.worker_python.strip() else ""
            notes = "".join(f" {note}." if not note.endswith(".") else f" {note}" for note in result.value.notes)
            self.messages.success(f"TileScribe is ready: its environment is {result.value.venv} (checked with a "
                                  f"test caption and search in {check.get('seconds', '?')} s).{replaced}{notes}")
        else:
            self._show_failure(result.error)
        self.refresh()

    def _show_failure(self, error: SetupError) -> None:
        if self.failure is not None:
            self.failure.deleteLater()
        self.failure = failure_box(error, self.iface.mainWindow())
        self.failure.open()
        if not isinstance(error, SetupCancelled):
            self.messages.warning(f"Set up TileScribe failed: {error}", f"The log: {error.log}")

    def remove(self, ask: bool = False) -> bool:
        if self.task is not None:
            self.messages.warning("Wait for Set up TileScribe to finish (or cancel it) before removing.")
            return False
        if ask and QMessageBox.question(self.iface.mainWindow(), "Remove TileScribe's environment",
                                        f"Delete {self.venv}? Indexes are kept; Set up TileScribe makes "
                                        "the environment again.") != QMessageBox.Yes:
            return False
        self.stop_worker()
        try:
            remove_environment(self.venv)
        except (SetupError, OSError) as exc:
            self.messages.warning(f"Cannot remove the environment: {exc}")
            return False
        settings = read_settings()
        if settings.environment == str(self.venv):
            write_settings(replace(settings, environment=""))
        self.messages.success(f"Removed {self.venv}.")
        self.refresh()
        return True

    def unload(self) -> None:
        for widget in (self.dialog, self.failure):  # banners and rows go with their dock and dialogs
            if widget is not None:
                widget.deleteLater()
        self.dialog = self.failure = None
        self.banners, self.rows = [], []
