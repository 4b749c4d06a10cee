"""The TileScribe search dock: index selector, query, options and the ranked results list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from qgis.gui import QgsDockWidget
from qgis.PyQt import uic
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QIcon, QPixmap
from qgis.PyQt.QtWidgets import QFileDialog, QListWidgetItem

from ..core.index_settings import INDEX_SUFFIX
from .results import Hit

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_DIR / "dock.ui"))
CAPTION_CHARS = 160


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

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("TileScribeDock")
        self.hits: list[Hit] = []
        self._opened: list[IndexSource] = []  # files the user opened by hand stay listed
        self.queryEdit.returnPressed.connect(self.searchRequested)
        self.searchButton.clicked.connect(self.searchRequested)
        self.openIndexButton.clicked.connect(lambda: self.open_index_file())
        self.resultsList.itemClicked.connect(self._item_clicked)
        self.zoomAllButton.clicked.connect(self.zoomAllRequested)
        self.exportButton.clicked.connect(self.exportRequested)
        self.clearButton.clicked.connect(self.clearRequested)
        self.indexCombo.setPlaceholderText("No index yet: Index layer, or Open…")
        self._enable_result_buttons()

    # -- indexes -----------------------------------------------------------------------

    def set_indexes(self, found: Sequence[IndexSource]) -> None:
        """List the indexes found in the project plus the opened ones; keep the selection."""
        current = self.current_db()
        self.indexCombo.clear()
        seen = set()
        for source in list(found) + self._opened:
            if source.db not in seen:
                seen.add(source.db)
                self.indexCombo.addItem(source.label, source.db)
                self.indexCombo.setItemData(self.indexCombo.count() - 1, source.db, Qt.ToolTipRole)
        if current:
            self.select_db(current)
        if self.indexCombo.currentIndex() < 0 and self.indexCombo.count():
            self.indexCombo.setCurrentIndex(0)  # with a placeholder text, Qt selects nothing by itself

    def open_index_file(self, path: Optional[str] = None) -> Optional[str]:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open a TileScribe index", "",
                                                  f"TileScribe index (*{INDEX_SUFFIX});;All files (*)")
        if not path:
            return None
        source = IndexSource(str(Path(path).resolve()), Path(path).name)
        if source.db not in [s.db for s in self._opened]:
            self._opened.append(source)
        if self.indexCombo.findData(source.db) < 0:
            self.indexCombo.addItem(source.label, source.db)
        self.select_db(source.db)
        return source.db

    def current_db(self) -> Optional[str]:
        return self.indexCombo.currentData()

    def select_db(self, db: str) -> None:
        position = self.indexCombo.findData(db)
        if position >= 0:
            self.indexCombo.setCurrentIndex(position)

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

    def show_hits(self, title: str, hits: Sequence[Hit], thumbnail: Callable[[Hit], Optional[QPixmap]]) -> None:
        self.resultsList.clear()
        self.hits = list(hits)
        for position, hit in enumerate(self.hits):
            caption = hit.caption if len(hit.caption) <= CAPTION_CHARS else hit.caption[:CAPTION_CHARS - 1] + "…"
            item = QListWidgetItem(f"#{hit.rank}   score {hit.score:.3f}\n{caption}")
            item.setToolTip(f"{hit.caption}\n\ntile {hit.tile_id}")
            item.setData(Qt.UserRole, position)
            pixmap = thumbnail(hit)
            if pixmap is not None:
                item.setIcon(QIcon(pixmap))
            self.resultsList.addItem(item)
        self.set_status(f"{len(self.hits)} results for “{title}”" if self.hits else f"No results for “{title}”.")
        self._enable_result_buttons()

    def clear_results(self) -> None:
        self.resultsList.clear()
        self.hits = []
        self.set_status("")
        self._enable_result_buttons()

    def _enable_result_buttons(self) -> None:
        for button in (self.zoomAllButton, self.exportButton, self.clearButton):
            button.setEnabled(bool(self.hits))

    def _item_clicked(self, item: QListWidgetItem) -> None:
        self.hitActivated.emit(self.hits[item.data(Qt.UserRole)])
