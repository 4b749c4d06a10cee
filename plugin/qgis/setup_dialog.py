"""The widgets of 'Set up TileScribe': the confirm dialog (what it downloads, how long), the offer
banner of the dock and the index dialog, the environment row of the settings dialog."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Optional

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFormLayout, QFrame, QHBoxLayout, QLabel,
                                 QMessageBox, QPushButton, QVBoxLayout, QWidget)

from ..bootstrap.builds import gpu_usable
from ..bootstrap.commands import SetupCancelled, SetupError
from ..bootstrap.installer import Preparation, SetupOptions
from ..bootstrap.plan import estimate
from .messages import for_qgis

TITLE = "Set up TileScribe"


class SetupDialog(QDialog):
    """Shows the plan for the options it holds; `prepare(options)` re-plans when a choice changes."""

    def __init__(self, options: SetupOptions, prepare: Callable[[SetupOptions], Preparation], parent=None):
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.setObjectName("TileScribeSetupDialog")
        self.setMinimumSize(680, 640)  # the plan's list wraps: room for six steps and the time note
        self._options, self._prepare = options, prepare
        self.intro = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.plan_label = QLabel(wordWrap=True, textFormat=Qt.RichText)
        self.time_label = QLabel(wordWrap=True)
        self.pythonFile = QgsFileWidget()
        self.pythonFile.setDialogTitle("Python to build TileScribe's environment from")
        self.gpuCheck = QCheckBox("Use the GPU")
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self._layout()
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.prep = prepare(options)
        self.pythonFile.setFilePath(str(self.prep.base_python or ""))
        usable = gpu_usable(self.prep.facts)
        self.gpuCheck.setEnabled(usable and self.prep.facts.system != "Darwin")  # Metal is always on
        self.gpuCheck.setChecked(self.prep.choice.accelerator != "cpu")
        self.gpuCheck.setToolTip("" if usable else "No NVIDIA GPU with a working driver (nvidia-smi) was found.")
        self.gpuCheck.toggled.connect(self._replan)
        self.pythonFile.fileChanged.connect(self._replan)
        self._show_plan()

    def _layout(self) -> None:
        form = QFormLayout()
        form.addRow("Python", self.pythonFile)
        form.addRow("", self.gpuCheck)
        layout = QVBoxLayout(self)
        for widget in (self.intro, self.plan_label, self.time_label):
            layout.addWidget(widget)
        layout.addLayout(form)
        layout.addStretch(1)
        layout.addWidget(self.buttons)

    def options(self) -> SetupOptions:
        """What the user chose: a named Python, the GPU or not."""
        named = self.pythonFile.filePath().strip()
        return SetupOptions(self._options.plugin_dir, self._options.profile_dir, Path(named) if named else None,
                            self.gpuCheck.isChecked() if self.gpuCheck.isEnabled() else None,
                            self._options.verify, self._options.env)

    def _replan(self, *_args) -> None:
        self.prep = self._prepare(self.options())
        self._show_plan()

    def _show_plan(self) -> None:
        prep = self.prep
        repair = prep.state.exists
        self.intro.setText(
            "TileScribe runs its models (torch, sentence-transformers, llama-cpp-python) in a Python environment "
            "of its own, outside QGIS's Python. " + ("It repairs the one in" if repair else "It creates it in")
            + f":\n{self._options.venv}")
        items = "".join(f"<li><b>{html.escape(step.title)}</b>: {html.escape(step.download)}</li>"
                        for step in prep.steps)
        notes = "".join(f"<p>{html.escape(for_qgis(note))}</p>" for note in (*prep.choice.notes, *prep.notes))
        self.plan_label.setText(f"<ul>{items}</ul>{notes}")
        self.time_label.setText(f"Time: {estimate(prep.steps)} (measured on 2 cores). It runs in the background "
                                "(task manager, bottom right), where Cancel stops it; a later repair continues "
                                "from there.")
        self.buttons.button(QDialogButtonBox.Ok).setText("Repair" if repair else "Set up")


class OfferBanner(QFrame):
    """'TileScribe needs its environment' + a button; hidden when there is nothing to offer."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("TileScribeSetupBanner")
        self.setFrameShape(QFrame.StyledPanel)
        self.label = QLabel(wordWrap=True)
        self.button = QPushButton(TITLE + "…")
        self.button.setObjectName("TileScribeSetupButton")
        column = QVBoxLayout(self)  # the text gets the dock's whole width: a narrow dock cuts no word
        column.addWidget(self.label)
        column.addWidget(self.button, 0, Qt.AlignRight)

    def show_offer(self, text: Optional[str], busy: str = "") -> None:
        """`busy`: the running setup's progress, shown instead of the offer."""
        self.label.setText(busy or text or "")
        self.button.setEnabled(not busy)
        self.setVisible(bool(busy or text))


class EnvironmentRow(QWidget):
    """The settings dialog's line: the environment's state, Set up / Repair, Remove."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("TileScribeEnvironmentRow")
        self.label = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.setupButton = QPushButton(TITLE + "…")
        self.removeButton = QPushButton("Remove environment")
        column = QVBoxLayout(self)  # the state (a path) on its own line, the buttons under it
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.setupButton)
        buttons.addWidget(self.removeButton)
        buttons.addStretch(1)
        column.addLayout(buttons)

    def show_state(self, text: str, exists: bool) -> None:
        self.label.setText(text)
        self.setupButton.setText("Repair…" if exists else TITLE + "…")
        self.removeButton.setEnabled(exists)


def failure_box(error: SetupError, parent=None) -> QMessageBox:
    """The message, the log's last lines (Show Details) and where the whole log is."""
    where = f"\n\nThe whole log: {error.log}" if error.log else ""
    title = f"{TITLE} stopped" if isinstance(error, SetupCancelled) else f"{TITLE} failed"
    box = QMessageBox(QMessageBox.Warning, title, f"{for_qgis(str(error))}{where}", QMessageBox.Ok, parent)
    box.setObjectName("TileScribeSetupFailure")
    box.setTextInteractionFlags(Qt.TextSelectableByMouse)
    box.setDetailedText("\n".join(error.tail) or "(no output)")
    return box

