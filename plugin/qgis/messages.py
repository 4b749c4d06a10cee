"""The one place errors reach the user: the message bar, or one dialog for a missing environment."""

from __future__ import annotations

from typing import Optional

from qgis.core import Qgis
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QMessageBox

from .worker_client import WorkerCrashed, WorkerUnavailable

TITLE = "TileScribe"


class Messages:
    def __init__(self, iface):
        self.iface = iface
        self.environment_dialog: Optional[QMessageBox] = None

    def push(self, text: str, level=Qgis.Info, details: str = "", duration: int = 8) -> None:
        bar = self.iface.messageBar()
        if details:
            bar.pushMessage(TITLE, text, details, level, duration)
        else:
            bar.pushMessage(TITLE, text, level, duration)

    def success(self, text: str) -> None:
        self.push(text, Qgis.Success)

    def warning(self, text: str, details: str = "") -> None:
        self.push(text, Qgis.Warning, details, duration=0)

    def error(self, what: str, error: Exception, after: str = "") -> None:
        """`what` went wrong because of `error`; `after` says what happens to the user's work."""
        if isinstance(error, WorkerUnavailable):
            self.show_environment_problem(str(error))
            return
        message = str(error).strip() or type(error).__name__
        first, _, rest = message.partition("\n")
        if isinstance(error, WorkerCrashed):
            first += " TileScribe restarts the worker on the next use."
        text = " ".join(part for part in (f"{what}: {first}", after) if part)
        self.push(text, Qgis.Critical, rest.strip(), duration=0)

    def show_environment_problem(self, text: str) -> QMessageBox:
        """One non-blocking dialog (reused) naming what is missing and the command that fixes it."""
        box = self.environment_dialog
        if box is None:
            box = QMessageBox(QMessageBox.Warning, f"{TITLE}: the worker environment is not ready", "",
                              QMessageBox.Ok, self.iface.mainWindow())
            box.setTextInteractionFlags(Qt.TextSelectableByMouse)  # so the command can be copied
            self.environment_dialog = box
        box.setText(text)
        box.open()
        return box

    def close(self) -> None:
        if self.environment_dialog is not None:
            self.environment_dialog.close()
            self.environment_dialog.deleteLater()
            self.environment_dialog = None
