"""The TileScribe search dock: index and run selectors, query, options and the ranked results list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from qgis.core import QgsApplication
from qgis.gui import QgsDockWidget
from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QFileDialog, QListWidgetItem

from ..core.indexing.index_settings import INDEX_SUFFIX
from .results import Hit
from .runs import RunChoice

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_DIR / "dock.ui"))
CAPTION_CHARS = 160
# Short enough for the dock's default width in QGIS (the longer hint was cut after "or"); the
# tooltip says the rest.
NO_INDEX = "No index: click Index layer"
NO_INDEX_TIP = ("No index yet: index a raster with Index layer (TileScribe toolbar, or Raster > TileScribe), "
                "or open an index file with Open…")
PLACEHOLDER_NOTE = ("Placeholder captions: this run was indexed with the test model, so its captions "
                    "say nothing about the tiles and the ranking means nothing. Index with a real model.")
RUN_TIP = ("One index file can hold several runs (the raster indexed with another model or tile size): "
           "the search uses the run chosen here")
THUMBNAILS_PER_TICK = 4  # rendered between event-loop turns, so the list stays responsive


@dataclass(frozen=True)
class IndexSource:
    """An index the dock can search: its file and how the selector names it."""

    db: str
    label: str


class SearchDock(QgsDockWidget, FORM_CLASS):
    searchRequested = pyqtSignal()
    hitActivated = pyqtSignal(object)
    zoomAllRequested = pyqtSignal()
    exportRequested = pyqtSignal()
    clearRequested = pyqtSignal()
    indexChanged = pyqtSignal(str)  # the chosen index file ("" for none)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("TileScribeDock")
        self.hits: list[Hit] = []
        self.runs: list[RunChoice] = []
        self._opened: list[IndexSource] = []  # files the user opened by hand stay listed
        self._db = ""  # the index the selector showed last: indexChanged fires only on a real change
        self.start_folder: Callable[[], str] = lambda: ""
        self.file_dialog: Optional[QFileDialog] = None
        self._thumbnails: list[tuple[QListWidgetItem, Hit]] = []
        self._thumbnail_timer = QTimer(self)
        self._thumbnail_timer.setInterval(0)
        self._thumbnail_timer.timeout.connect(self._render_some_thumbnails)
        self._thumbnail: Callable[[Hit], Optional[QPixmap]] = lambda hit: None
        self.queryEdit.returnPressed.connect(self.searchRequested)
        self.searchButton.clicked.connect(self.searchRequested)
        self.openIndexButton.clicked.connect(self.choose_index_file)
        self.indexCombo.currentIndexChanged.connect(self._index_selected)
        self.runCombo.currentIndexChanged.connect(self._show_run_tip)
        self.resultsList.itemClicked.connect(self._item_clicked)
        self.zoomAllButton.clicked.connect(self.zoomAllRequested)
        self.exportButton.clicked.connect(self.exportRequested)
        self.clearButton.clicked.connect(self.clearRequested)
        self.set_indexes([])
        self.set_runs([])
        self._enable_result_buttons()

    # -- indexes -----------------------------------------------------------------------

    def set_indexes(self, found: Sequence[IndexSource]) -> None:
        """List the indexes found in the project plus the opened ones; keep the user's choice."""
        current = self.current_db()
        kept = [IndexSource(current, self.indexCombo.currentText())] if current else []
        sources, seen = [], set()
        # The chosen index stays listed (and chosen) when its raster layer leaves the project.
        for source in list(found) + self._opened + kept:
            if source.db not in seen:
                seen.add(source.db)
                sources.append(source)
        self.indexCombo.blockSignals(True)  # one indexChanged at most, after the list is rebuilt
        self.indexCombo.clear()
        for source in sources:
            self.indexCombo.addItem(source.label, source.db)
            self.indexCombo.setItemData(self.indexCombo.count() - 1, source.db, Qt.ToolTipRole)
        if not sources:
            # Qt 5's combo box draws no placeholder text: an item without data says it instead.
            self.indexCombo.addItem(NO_INDEX, None)
            self.indexCombo.setItemData(0, NO_INDEX_TIP, Qt.ToolTipRole)
        position = self.indexCombo.findData(current) if current else -1
        self.indexCombo.setCurrentIndex(max(position, 0))
        self.indexCombo.blockSignals(False)
        self._index_selected()

    def choose_index_file(self) -> QFileDialog:
        """The Open… dialog, non-modal, starting beside the project's rasters."""
        dialog = QFileDialog(self, "Open a TileScribe index", self.start_folder(),
                             f"TileScribe index (*{INDEX_SUFFIX});;All files (*)")
        dialog.setFileMode(QFileDialog.ExistingFile)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.fileSelected.connect(self.open_index_file)
        self.file_dialog = dialog
        dialog.open()
        return dialog

    def open_index_file(self, path: str) -> Optional[str]:
        if not path:
            return None
        source = IndexSource(str(Path(path).resolve()), Path(path).name)
        if source.db not in [s.db for s in self._opened]:
            self._opened.append(source)
        self.set_indexes([IndexSource(self.indexCombo.itemData(i), self.indexCombo.itemText(i))
                          for i in range(self.indexCombo.count()) if self.indexCombo.itemData(i)])
        self.select_db(source.db)
        return source.db

    def current_db(self) -> Optional[str]:
        return self.indexCombo.currentData() or None

    def select_db(self, db: str) -> None:
        position = self.indexCombo.findData(db)
        if position >= 0:
            self.indexCombo.setCurrentIndex(position)

    def _index_selected(self, *_args) -> None:
        db = self.current_db() or ""
        if db != self._db:
            self._db = db
            self.set_runs([])
            self.indexChanged.emit(db)

    # -- runs --------------------------------------------------------------------------

    def set_runs(self, runs: Sequence[RunChoice], select: Optional[int] = None) -> None:
        """List the chosen index's runs; keep the chosen run when it is still there."""
        keep = select if select is not None else (self.current_run().id if self.current_run() else None)
        self.runs = list(runs)
        self.runCombo.blockSignals(True)
        self.runCombo.clear()
        for run in self.runs:
            self.runCombo.addItem(run.label(), run.id)
            self.runCombo.setItemData(self.runCombo.count() - 1, f"run {run.id}: {run.label()}\n{run.raster}",
                                      Qt.ToolTipRole)
        position = self.runCombo.findData(keep) if keep is not None else -1
        if position < 0:
            position = next((i for i, run in enumerate(self.runs) if run.tiles_done), 0)
        self.runCombo.setCurrentIndex(position if self.runs else -1)
        self.runCombo.blockSignals(False)
        self._show_run_tip()
        self.runCombo.setEnabled(len(self.runs) > 1)

    def _show_run_tip(self, *_args) -> None:
        """The whole label of the chosen run: the box is narrower than it."""
        run = self.current_run()
        self.runCombo.setToolTip(f"run {run.id}: {run.label()}" if run else RUN_TIP)

    def current_run(self) -> Optional[RunChoice]:
        position = self.runCombo.currentIndex()
        return self.runs[position] if 0 <= position < len(self.runs) else None

    def run_by_id(self, run_id: int) -> Optional[RunChoice]:
        return next((run for run in self.runs if run.id == run_id), None)

    # -- query -------------------------------------------------------------------------

    def query(self) -> str:
        return self.queryEdit.text().strip()

    def k(self) -> int:
        return self.kSpin.value()

    def only_in_extent(self) -> bool:
        return self.extentCheck.isChecked()

    def set_busy(self, busy: bool, text: str = "") -> None:
        self.searchButton.setEnabled(not busy)
        self.set_status(text)

    def set_status(self, text: str) -> None:
        self.statusLabel.setText(text)

    # -- results -----------------------------------------------------------------------

    def show_hits(self, status: str, hits: Sequence[Hit],
                  thumbnail: Optional[Callable[[Hit], Optional[QPixmap]]], placeholder: bool = False) -> None:
        """The list at once with blank thumbnails; the tiles' pictures follow between event-loop turns.

        `thumbnail` None: no raster layer shows the tiles, so rows have no picture at all."""
        self._stop_thumbnails()
        self.resultsList.clear()
        self.hits = list(hits)
        if placeholder and self.hits:
            note = QListWidgetItem(QgsApplication.getThemeIcon("/mIconWarning.svg"), PLACEHOLDER_NOTE)
            note.setFlags(Qt.ItemIsEnabled)  # not a result: not selectable, clicking it does nothing
            note.setBackground(QColor(255, 236, 179))
            self.resultsList.addItem(note)
        blank = QIcon(_blank_pixmap(self.resultsList.iconSize().width())) if thumbnail else QIcon()
        for position, hit in enumerate(self.hits):
            caption = hit.caption if len(hit.caption) <= CAPTION_CHARS else hit.caption[:CAPTION_CHARS - 1] + "…"
            item = QListWidgetItem(blank, f"#{hit.rank}   score {hit.score:.3f}\n{caption}")
            item.setToolTip(f"{hit.caption}\n\ntile {hit.tile_id}")
            item.setData(Qt.UserRole, position)
            self.resultsList.addItem(item)
            if thumbnail is not None:
                self._thumbnails.append((item, hit))
        self._thumbnail = thumbnail or (lambda hit: None)
        if self._thumbnails:
            self._thumbnail_timer.start()
        self.set_status(status)
        self._enable_result_buttons()

    def thumbnails_pending(self) -> bool:
        return bool(self._thumbnails)

    def _render_some_thumbnails(self) -> None:
        for _ in range(THUMBNAILS_PER_TICK):
            if not self._thumbnails:
                break
            item, hit = self._thumbnails.pop(0)
            pixmap = self._thumbnail(hit)
            if pixmap is not None:
                item.setIcon(QIcon(pixmap))
        if not self._thumbnails:
            self._thumbnail_timer.stop()

    def _stop_thumbnails(self) -> None:
        self._thumbnail_timer.stop()
        self._thumbnails = []

    def clear_results(self) -> None:
        self._stop_thumbnails()
        self.resultsList.clear()
        self.hits = []
        self.set_status("")
        self._enable_result_buttons()

    def _enable_result_buttons(self) -> None:
        for button in (self.zoomAllButton, self.exportButton, self.clearButton):
            button.setEnabled(bool(self.hits))

    def _item_clicked(self, item: QListWidgetItem) -> None:
        position = item.data(Qt.UserRole)
        if position is not None:
            self.hitActivated.emit(self.hits[position])


def _blank_pixmap(size: int) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(220, 220, 220))
    return pixmap
