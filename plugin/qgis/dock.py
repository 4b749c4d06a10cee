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
from .runs import RunChoice, raster_count

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
SEVERAL_RUNS_TIP = ("Several indexes are ticked: each raster is searched at its latest captioned run. "
                    "Tick one index only to pick one of its runs.")
# The Index dialog's project index holds one run per raster: none of them is "the" run to pick.
SEVERAL_RASTERS_TIP = ("This index holds several rasters (the Index dialog's project index): each is searched, "
                       "and inspected, at its latest captioned run.")
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
    keepRequested = pyqtSignal()
    clearRequested = pyqtSignal()
    indexChanged = pyqtSignal(str)  # the ticks changed; the one ticked index file ("" for none or several)
    runChanged = pyqtSignal()  # the user chose another run in the Run box

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("TileScribeDock")
        self.hits: list[Hit] = []
        self.runs: list[RunChoice] = []
        self._opened: list[IndexSource] = []  # files the user opened by hand stay listed
        self._marks: dict[str, str] = {}  # index file -> why searches leave it out (another embedder)
        self._db = ""  # the ticked indexes last seen: indexChanged fires only on a real change
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
        self.indexList.itemChanged.connect(self._index_selected)
        self.runCombo.currentIndexChanged.connect(self._run_chosen)
        self.resultsList.itemClicked.connect(self._item_clicked)
        self.zoomAllButton.clicked.connect(self.zoomAllRequested)
        self.exportButton.clicked.connect(self.exportRequested)
        self.keepButton.clicked.connect(self.keepRequested)
        self.clearButton.clicked.connect(self.clearRequested)
        self.set_indexes([])
        self.set_runs([])
        self._enable_result_buttons()

    # -- indexes -----------------------------------------------------------------------

    def set_indexes(self, found: Sequence[IndexSource]) -> None:
        """List the indexes found in the project plus the opened ones, each with a tick box.

        Ticks are kept; a newly listed index is ticked when every listed one was (the dock searches
        the whole project by default), else left unticked for the user to add."""
        before = self._listed()
        ticked = set(self.selected_dbs())
        narrowed = bool(before) and len(ticked) < len(before)
        # The one index the user searches stays listed (and ticked) when its raster layer leaves the
        # project; with several ticked, the list follows the project.
        kept = [IndexSource(db, label) for db, label in before.items() if db in ticked and len(ticked) == 1]
        sources, seen = [], set()
        for source in list(found) + self._opened + kept:
            if source.db not in seen:
                seen.add(source.db)
                sources.append(source)
        self.indexList.blockSignals(True)  # one indexChanged at most, after the list is rebuilt
        self.indexList.clear()
        for source in sources:
            item = QListWidgetItem(source.label)
            item.setData(Qt.UserRole, source.db)
            item.setFlags(Qt.ItemIsEnabled | Qt.ItemIsUserCheckable | Qt.ItemIsSelectable)
            on = source.db in ticked if source.db in before else not narrowed
            item.setCheckState(Qt.Checked if on else Qt.Unchecked)
            self._show_mark(item)
            self.indexList.addItem(item)
        if not sources:
            note = QListWidgetItem(NO_INDEX)
            note.setToolTip(NO_INDEX_TIP)
            note.setFlags(Qt.ItemIsEnabled)
            self.indexList.addItem(note)
        self.indexList.blockSignals(False)
        self._index_selected()

    def mark_other_embedder(self, db: str, why: str) -> None:
        """Marks a listed index that searches leave out (made with another embedding model); `why`
        empty takes the mark off (it was searched)."""
        if why:
            self._marks[db] = why
        elif self._marks.pop(db, None) is None:
            return
        for item in self._index_items():
            if item.data(Qt.UserRole) == db:
                self._show_mark(item)

    def _show_mark(self, item: QListWidgetItem) -> None:
        db = item.data(Qt.UserRole)
        why = self._marks.get(db)
        item.setIcon(QgsApplication.getThemeIcon("/mIconWarning.svg") if why else QIcon())
        item.setToolTip(f"{item.text()}\n{db}" + (f"\n\n{why}" if why else ""))

    def _listed(self) -> dict:
        """{index file: label} of the listed indexes, in list order."""
        return {item.data(Qt.UserRole): item.text() for item in self._index_items()}

    def _index_items(self) -> list[QListWidgetItem]:
        items = (self.indexList.item(i) for i in range(self.indexList.count()))
        return [item for item in items if item.data(Qt.UserRole)]

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
        """An index opened by hand is listed and ticked (added to what the dock searches)."""
        if not path:
            return None
        source = IndexSource(str(Path(path).resolve()), Path(path).name)
        if source.db not in [s.db for s in self._opened]:
            self._opened.append(source)
        self.set_indexes([IndexSource(db, label) for db, label in self._listed().items()])
        self.tick_db(source.db)
        return source.db

    def selected_dbs(self) -> list[str]:
        """The ticked index files, in list order: what a search ranks together."""
        return [item.data(Qt.UserRole) for item in self._index_items() if item.checkState() == Qt.Checked]

    def current_db(self) -> Optional[str]:
        """The one index searched when exactly one is ticked (its runs, Inspect); None otherwise."""
        dbs = self.selected_dbs()
        return dbs[0] if len(dbs) == 1 else None

    def select_db(self, db: str) -> None:
        """Search only `db` (every other index unticked)."""
        if db in self._listed():
            self._set_ticks(lambda item: item.data(Qt.UserRole) == db)

    def tick_db(self, db: str) -> None:
        """Add `db` to the searched indexes."""
        if db in self._listed():
            self._set_ticks(lambda item: item.data(Qt.UserRole) == db or item.checkState() == Qt.Checked)

    def _set_ticks(self, ticked: Callable[[QListWidgetItem], bool]) -> None:
        self.indexList.blockSignals(True)
        for item in self._index_items():
            item.setCheckState(Qt.Checked if ticked(item) else Qt.Unchecked)
        self.indexList.blockSignals(False)
        self._index_selected()

    def index_summary(self) -> str:
        """What the row above the list says: which indexes a search covers."""
        listed, dbs = self._listed(), self.selected_dbs()
        if not listed:
            return ""
        if len(dbs) == 1:
            return listed[dbs[0]]
        if len(dbs) == len(listed):
            return f"all {len(dbs)} indexes" if len(dbs) > 1 else listed[dbs[0]]
        return f"{len(dbs)} of {len(listed)} indexes" if dbs else "no index ticked"

    def _index_selected(self, *_args) -> None:
        # One label: two side by side read 'Search in  all 2 indexes' (the layout's gap is two spaces).
        self.indexSummary.setText(" ".join(("Search in", self.index_summary())).strip())
        self.indexSummary.setToolTip("\n".join([self.indexSummary.text(), *self.selected_dbs()]))
        selection = "\n".join(self.selected_dbs())
        if selection != self._db:
            self._db = selection
            self.set_runs([])
            self.indexChanged.emit(self.current_db() or "")

    # -- runs --------------------------------------------------------------------------

    def set_runs(self, runs: Sequence[RunChoice], select: Optional[int] = None) -> None:
        """List the chosen index's runs; keep the chosen run when it is still there."""
        keep = select if select is not None else (self.current_run().id if self.current_run() else None)
        self.runs = list(runs)
        self.runCombo.blockSignals(True)
        self.runCombo.clear()
        rasters = raster_count(self.runs)
        if rasters > 1:  # no run to pick: one entry says what is searched
            self.runCombo.addItem(f"{rasters} rasters, each at its latest run", None)
            self.runCombo.setCurrentIndex(0)
            self.runCombo.blockSignals(False)
            self.runCombo.setEnabled(False)
            self.runCombo.setToolTip(SEVERAL_RASTERS_TIP)
            return
        for run in self.runs:
            self.runCombo.addItem(run.label(), run.id)
            self.runCombo.setItemData(self.runCombo.count() - 1, f"run {run.id}: {run.label()}\n{run.raster}",
                                      Qt.ToolTipRole)
        position = self.runCombo.findData(keep) if keep is not None else -1
        if position < 0:
            position = next((i for i, run in enumerate(self.runs) if run.tiles_done), 0)
        self.runCombo.setCurrentIndex(position if self.runs else -1)
        self.runCombo.blockSignals(False)
        # The box is narrower than its entries: its list opens as wide as the longest one.
        self.runCombo.view().setMinimumWidth(self.runCombo.view().sizeHintForColumn(0) + 24 if self.runs else 0)
        self._show_run_tip()
        self.runCombo.setEnabled(len(self.runs) > 1)
        if not self.runs and len(self.selected_dbs()) > 1:
            self.runCombo.setToolTip(SEVERAL_RUNS_TIP)

    def _run_chosen(self, *_args) -> None:
        self._show_run_tip()
        self.runChanged.emit()

    def choose_run(self, run_id: int) -> None:
        """Selects a listed run as if the user picked it in the Run box."""
        position = self.runCombo.findData(run_id)
        if position >= 0 and position != self.runCombo.currentIndex():
            self.runCombo.setCurrentIndex(position)

    def _show_run_tip(self, *_args) -> None:
        """The whole label of the chosen run: the box is narrower than it."""
        run = self.current_run()
        self.runCombo.setToolTip(f"run {run.id}: {run.label()}" if run else RUN_TIP)

    def current_run(self) -> Optional[RunChoice]:
        """The run the Run box shows; None with several indexes ticked, or one of several rasters."""
        position = self.runCombo.currentIndex()
        if self.runCombo.itemData(position) is None:
            return None
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
                  thumbnail: Optional[Callable[[Hit], Optional[QPixmap]]], placeholder: bool = False,
                  source: Optional[Callable[[Hit], str]] = None) -> None:
        """The list at once with blank thumbnails; the tiles' pictures follow between event-loop turns.

        `thumbnail` None: no raster layer shows the tiles, so rows have no picture at all.
        `source`: the layer (or raster file) a hit belongs to, named in its row when hits come from several."""
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
            where = f"   {source(hit)}" if source is not None else ""
            item = QListWidgetItem(blank, f"#{hit.rank}   score {hit.score:.3f}{where}\n{caption}")
            item.setToolTip(f"{hit.caption}\n\ntile {hit.tile_id}" + (f" of {hit.raster}\nindex {hit.index}"
                                                                        if hit.index else ""))
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

    def reset(self) -> None:
        """As for a new project: no results, no status, no opened index, the search button enabled."""
        self._opened = []
        self._marks = {}
        self.indexList.blockSignals(True)
        self.indexList.clear()
        self.indexList.blockSignals(False)
        self.clear_results()
        self.searchButton.setEnabled(True)

    def clear_results(self) -> None:
        self._stop_thumbnails()
        self.resultsList.clear()
        self.hits = []
        self.set_status("")
        self._enable_result_buttons()

    def _enable_result_buttons(self) -> None:
        for button in (self.zoomAllButton, self.exportButton, self.keepButton, self.clearButton):
            button.setEnabled(bool(self.hits))

    def _item_clicked(self, item: QListWidgetItem) -> None:
        position = item.data(Qt.UserRole)
        if position is not None:
            self.hitActivated.emit(self.hits[position])


def _blank_pixmap(size: int) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(220, 220, 220))
    return pixmap
