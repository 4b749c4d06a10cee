"""The one place errors reach the user: the message bar, or one dialog for a missing environment."""

from __future__ import annotations

import re
from typing import Callable, Optional

from qgis.core import Qgis, QgsMessageLog
from qgis.gui import QgsMessageBar, QgsMessageBarItem
from qgis.PyQt.QtCore import QMetaObject, Qt, QTimer
from qgis.PyQt.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QSizePolicy, QWidget

from ..worker.client import WorkerCrashed, WorkerUnavailable

TITLE = "TileScribe"
TASK_PREFIX = "TileScribe:"  # every task's description starts so (see tasks.py)
# QGIS's own notices for long tasks; ours say more (what was done, what is kept), so theirs go.
QGIS_TASK_NOTICES = ("Task complete", "Task failed")

# The core's errors are shared with the command line and give its flags; in QGIS the same advice
# names the buttons that do it. One translator: every text shown in QGIS goes through for_qgis.
SET_UP = ("Set up TileScribe… (in the TileScribe search dock, or Raster > TileScribe > Settings…), "
          "then Set up or Repair")
PICKER = "the model picker (Download / choose… beside the Model file)"
IN_WORKER = "In the worker, one tile at a time"  # model_fields.ENGINE_CHOICES' label
QGIS_WORDING = (
    (r"give the current names with --files MODEL\.gguf MMPROJ\.gguf",
     f"type the current names under 'From a repository' in {PICKER}, then Download"),
    (r"Name the files to download from (\S+) with --files MODEL\.gguf MMPROJ\.gguf",
     r"Type the names of the files to download from \1 under 'From a repository' in the model picker"),
    (r"give --files with exactly one of each",
     f"type one model file and one projector file under 'From a repository' in {PICKER}"),
    (r"Run `tilescribe models list` to see the catalogue\.", f"{PICKER[0].upper()}{PICKER[1:]} lists the catalogue."),
    (r"run `make setup` \(it builds one\), install llama\.cpp from your package manager, or give its path "
     r"with --llama-server; or use --engine llama-cpp-python\.",
     f"choose the engine '{IN_WORKER}' in the Index dialog or TileScribe's Settings, or let TileScribe "
     f"build llama-server for this computer: {SET_UP} (it needs a C++ compiler; about 10 minutes on 2 cores)."),
    (r" \(--llama-server, or the setting\)", ""),
    (r", or with --python\.", "."),
    (r"give --model M\.gguf and --mmproj P\.gguf (\([^)]*\)), or --server URL --server-model NAME, "
     r"or --test-model for the tiny placeholder model",
     f"choose a Model file and a Projector file \\1 in the Index dialog or with {PICKER}, or a model "
     "server, or the test model"),
    (r"; the query embedder is (.+?) \((\d+)-d\)\. Search with --embedder pointing at .+?\.(?=\s|$)",
     r", another embedding model than the one TileScribe searches with (\1, \2-d), so its scores mean nothing "
     "for this query. Index the raster again to search it here."),
    (r"drop --engine server or --test-model", f"choose the engine '{IN_WORKER}', or a real model"),
    (r", or pass --embedder with a sentence-transformers folder", " (it installs the default embedding model)"),
    (r"Run TileScribe from the environment `make setup` creates \(\.venv\), whose Python can load SQLite "
     r"extensions", f"Use TileScribe's own environment, whose Python can load SQLite extensions: {SET_UP}"),
    (r"in QGIS, Set up TileScribe > Repair \(the TileScribe dock, or Raster > TileScribe > Settings\); from a "
     r"checkout, make setup", SET_UP),
    (r"\(or run `make setup`\)", f"(or rebuild it: {SET_UP})"),
    (r"([Rr])un `make setup`( again)?", lambda m: ("U" if m.group(1) == "R" else "u") + f"se {SET_UP}"
     + (" again" if m.group(2) else "")),
)
_QGIS_WORDING = tuple((re.compile(pattern), replacement) for pattern, replacement in QGIS_WORDING)
CLI_ADVICE = re.compile(r"(?<![\w-])--[a-z][\w-]*|`make setup`|in a terminal|`tilescribe ")


def for_qgis(text: str) -> str:
    """`text` with the command line's advice (flags, `make setup`) replaced by QGIS's buttons."""
    for pattern, replacement in _QGIS_WORDING:
        text = pattern.sub(replacement, text)
    return text


class WrappedMessage(QWidget):
    """A message bar item's body that shows every line (the bar's own text view shows ~1.5 lines)."""

    def __init__(self, text: str, details: str = "", parent=None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel(text, self)
        self.label.setObjectName("tilescribeMessageText")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.PlainText)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.label.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Minimum)
        if details:
            self.label.setToolTip(details)
        layout.addWidget(self.label, 1)

    def add_button(self, text: str, slot: Callable[[], None]) -> QPushButton:
        button = QPushButton(text, self)
        button.clicked.connect(slot)
        self.layout().addWidget(button, 0, Qt.AlignTop)
        return button


def push_wrapped(bar: QgsMessageBar, text: str, level=Qgis.Info, duration: int = 0,
                 details: str = "") -> QgsMessageBarItem:
    """Push `text` (all of it, wrapped) to a message bar; `details` go below it."""
    # Parented from the start: C++ owns it. Parentless, it belonged to Python, and in the QGIS
    # application a message pushed without a key lost its text as soon as the item's wrapper went.
    body = WrappedMessage(f"{text}\n{details}".strip() if details else text, parent=bar)
    item = QgsMessageBarItem(body, level, duration)
    item.body = body  # python reference: the caller adds buttons
    bar.pushItem(item)
    return item


class Messages:
    """Pushes messages; one item per `key`, so a newer message on a subject replaces the older one."""

    def __init__(self, iface):
        self.iface = iface
        self.environment_dialog: Optional[QMessageBox] = None
        self._items: dict[str, QgsMessageBarItem] = {}
        self.bar().widgetAdded.connect(self._drop_qgis_task_notice)

    def bar(self) -> QgsMessageBar:
        return self.iface.messageBar()

    def push(self, text: str, level=Qgis.Info, details: str = "", duration: int = 8,
             key: str = "") -> QgsMessageBarItem:
        self.dismiss(key)
        text, details = for_qgis(text), for_qgis(details)
        QgsMessageLog.logMessage(f"{text}\n{details}".strip(), TITLE, level)
        item = push_wrapped(self.bar(), text, level, duration, details)
        if key:
            self._items[key] = item
        return item

    def offer(self, text: str, button: str, slot: Callable[[], None], key: str) -> QgsMessageBarItem:
        """A message with one button that does what the text offers (and then goes away)."""
        item = self.push(text, Qgis.Info, duration=0, key=key)
        item.body.add_button(button, lambda: (self.dismiss(key), slot()))
        return item

    def dismiss(self, key: str) -> None:
        """Take a message off the bar: it no longer holds (a resumed run finished, an index was chosen)."""
        item = self._items.pop(key, None) if key else None
        if item is None:
            return
        try:
            if item in self.bar().items():
                self.bar().popWidget(item)
        except RuntimeError:  # already deleted by the bar (timed out, closed by the user)
            pass

    def success(self, text: str, key: str = "") -> None:
        self.push(text, Qgis.Success, key=key)

    def warning(self, text: str, details: str = "", key: str = "") -> None:
        self.push(text, Qgis.Warning, details, duration=0, key=key)

    def error(self, what: str, error: Exception, after: str = "", key: str = "") -> None:
        """`what` went wrong because of `error`; `after` says what happens to the user's work."""
        if isinstance(error, WorkerUnavailable):
            self.show_environment_problem(str(error))
            return
        message = str(error).strip() or type(error).__name__
        first, _, rest = message.partition("\n")
        if isinstance(error, WorkerCrashed):
            first += " TileScribe restarts the worker on the next use."
        text = " ".join(part for part in (f"{what}: {first}", after) if part)
        self.push(text, Qgis.Critical, rest.strip(), duration=0, key=key)

    def _drop_qgis_task_notice(self, _widget=None) -> None:
        QTimer.singleShot(0, self._pop_qgis_task_notices)  # after the bar has shown it

    def _pop_qgis_task_notices(self) -> None:
        bar = self.bar()
        try:
            popped = False
            for item in bar.items():
                if item.title() in QGIS_TASK_NOTICES and item.text().startswith(TASK_PREFIX):
                    bar.popWidget(item)
                    popped = True
            current = bar.currentItem()
            if popped and current is not None and current.duration() == 0:
                # The bar's countdown was started for QGIS's 5 s notice; popping that notice does not
                # stop it, and when it ran out it popped the message shown now (a "Search <index>"
                # offer, a warning) that is meant to stay until the user acts or closes it.
                QMetaObject.invokeMethod(bar, "resetCountdown")
        except RuntimeError:  # the bar went away (QGIS closing)
            pass

    def show_environment_problem(self, text: str) -> QMessageBox:
        """One non-blocking dialog (reused) naming what is missing and the command that fixes it."""
        box = self.environment_dialog
        if box is None:
            box = QMessageBox(QMessageBox.Warning, f"{TITLE}: the worker environment is not ready", "",
                              QMessageBox.Ok, self.iface.mainWindow())
            box.setTextInteractionFlags(Qt.TextSelectableByMouse)  # so the command can be copied
            self.environment_dialog = box
        box.setText(for_qgis(text))
        box.open()
        return box

    def close(self) -> None:
        try:
            self.bar().widgetAdded.disconnect(self._drop_qgis_task_notice)
        except (TypeError, RuntimeError):
            pass
        for key in list(self._items):
            self.dismiss(key)
        if self.environment_dialog is not None:
            self.environment_dialog.close()
            self.environment_dialog.deleteLater()
            self.environment_dialog = None
