"""The inspect map tool (click a tile to read its captions) and the dialog that shows them."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

from qgis.gui import QgsMapToolEmitPoint
from qgis.PyQt import uic
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QDialog

from .wording import count

UI_FILE = Path(__file__).resolve().parents[2] / "ui" / "captions_dialog.ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_FILE))
FIELD_LABELS = (("one_sentence", "In one sentence"), ("feature", "Main feature"), ("caption", "Caption"))


class InspectTool(QgsMapToolEmitPoint):
    """Emits `canvasClicked(point, button)` in map coordinates; the plugin does the rest."""

    def __init__(self, canvas, action=None):
        super().__init__(canvas)
        if action is not None:
            self.setAction(action)  # the action is unchecked when another tool takes over


class CaptionsDialog(QDialog, FORM_CLASS):
    """Non-modal: the user keeps clicking tiles while it is open; each click updates it."""

    similarRequested = pyqtSignal(str, int, str, int)  # index file, tile db id, tile id, run id

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.record: Optional[dict] = None
        self.db = ""
        self.buttonBox.rejected.connect(self.close)
        self.similarButton.clicked.connect(self._similar)

    def show_tile(self, db: str, record: dict, placeholder: bool = False) -> None:
        self.db, self.record = db, record
        captions = record.get("captions") or []
        status = record.get("status", "")
        state = count(len(captions), "caption") if status == "done" else f"{status}, no captions"
        note = ("<br/><i>Placeholder captions from the test model: they say nothing about this tile.</i>"
                if placeholder else "")
        self.titleLabel.setText(
            f"<b>Tile {html.escape(record['tile_id'])}</b> of {html.escape(Path(db).name)}: {state}{note}")
        self.captionsView.setHtml(captions_html(record))
        self.similarButton.setEnabled(record.get("status") == "done" and bool(captions))
        self.show()
        self.raise_()

    def _similar(self) -> None:
        if self.record is not None:
            self.similarRequested.emit(self.db, int(self.record["tile_db_id"]), self.record["tile_id"],
                                       int(self.record["run_id"]))


def captions_html(record: dict) -> str:
    captions = record.get("captions") or []
    if not captions:
        reason = record.get("reason") or "not captioned yet"
        return f"<p><i>No captions: {html.escape(reason)}.</i></p>"
    parts = []
    for number, variant in enumerate(captions, start=1):
        lines = [f"<b>{label}:</b> {html.escape(variant[key])}" for key, label in FIELD_LABELS if variant.get(key)]
        parts.append(f"<p><b>{number}.</b> " + "<br/>".join(lines) + "</p>")
    return "".join(parts)
