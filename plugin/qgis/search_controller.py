"""Drives the dock: starts search tasks, shows hits in the list and on the map, zooms, exports."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsCoordinateReferenceSystem, QgsMapLayerType, QgsProject
from qgis.PyQt.QtWidgets import QFileDialog

from ..core.errors import TileScribeError
from .dock import IndexSource, SearchDock
from .highlight import ResultsLayer, export_geopackage, flash, zoom_to
from .indexing import index_path_beside
from .messages import Messages
from .results import ExtentFilter, Hit, SearchOutcome, SearchParams
from .tasks import SearchTask, SimilarTask, TaskResult, TaskRunner
from .thumbnails import raster_layer_for, tile_thumbnail
from .worker_client import WorkerClient, WorkerError

# Errors about what the user typed are shown in the dock, not in the message bar.
INLINE_ERRORS = {"QueryError"}


def indexes_in_project(project: QgsProject) -> list[IndexSource]:
    """Index files lying beside the project's raster layers (<stem>.tilescribe.sqlite)."""
    found = []
    for layer in project.mapLayers().values():
        if layer.type() == QgsMapLayerType.RasterLayer:
            db = index_path_beside(layer)
            if db:
                found.append(IndexSource(str(Path(db).resolve()), f"{layer.name()} ({Path(db).name})"))
    return sorted(found, key=lambda source: source.label.lower())


class SearchController:
    def __init__(self, iface, dock: SearchDock, client: Callable[[], WorkerClient], runner: TaskRunner,
                 messages: Messages, k_default: int = 10):
        self.iface, self.dock, self.client, self.runner, self.messages = iface, dock, client, runner, messages
        self.project = QgsProject.instance()
        self.results = ResultsLayer(self.project)
        self.outcome: Optional[SearchOutcome] = None
        self._serial = 0  # only the latest search's results are shown, whichever finishes first
        dock.kSpin.setValue(k_default)
        dock.searchRequested.connect(self.search)
        dock.hitActivated.connect(self.activate)
        dock.zoomAllRequested.connect(self.zoom_all)
        dock.exportRequested.connect(self.export)
        dock.clearRequested.connect(self.clear)
        self.project.layersAdded.connect(self.refresh_indexes)
        self.project.layersRemoved.connect(self.refresh_indexes)
        self.refresh_indexes()

    def unload(self) -> None:
        self.project.layersAdded.disconnect(self.refresh_indexes)
        self.project.layersRemoved.disconnect(self.refresh_indexes)
        self.results.clear()

    def refresh_indexes(self, *_args, select: str = "") -> None:
        self.dock.set_indexes(indexes_in_project(self.project))
        if select:
            select = str(Path(select).resolve())
            if self.dock.indexCombo.findData(select) < 0:
                self.dock.open_index_file(select)  # not beside a layer of the project
            else:
                self.dock.select_db(select)

    # -- searching ---------------------------------------------------------------------

    def search(self) -> Optional[SearchTask]:
        db, query = self.dock.current_db(), self.dock.query()
        if not db:
            self.dock.set_status("Choose an index first: index a raster layer, or Open… an index file.")
            return None
        if not query:
            self.dock.set_status("Type what you look for, e.g. “a bridge over a river”, then press Enter.")
            return None
        extent = None
        if self.dock.only_in_extent():
            canvas = self.iface.mapCanvas()
            extent = ExtentFilter(canvas.extent(), canvas.mapSettings().destinationCrs(),
                                  self.project.transformContext())
        self.dock.set_busy(True, f"Searching “{query}”…")
        return self.runner.start(SearchTask(self.client(), SearchParams(db, query, self.dock.k(), extent),
                                            self._latest_only()))

    def similar(self, db: str, tile_db_id: int, tile_id: str) -> SimilarTask:
        self.dock.setUserVisible(True)
        self.dock.set_busy(True, f"Looking for tiles like {tile_id}…")
        return self.runner.start(SimilarTask(self.client(), db, tile_db_id, tile_id, self.dock.k(),
                                             self._latest_only()))

    def _latest_only(self) -> Callable[[TaskResult], None]:
        self._serial += 1
        serial = self._serial
        return lambda result: self._search_done(result) if serial == self._serial else None

    def _search_done(self, result: TaskResult) -> None:
        self.dock.set_busy(False)
        if result.error is not None:
            self.dock.set_status(str(result.error).partition("\n")[0])
            if getattr(result.error, "kind", type(result.error).__name__) not in INLINE_ERRORS:
                self.messages.error("Search failed", result.error)
            return
        self.show_outcome(result.value)

    def display_crs(self, crs: QgsCoordinateReferenceSystem, raster: str) -> QgsCoordinateReferenceSystem:
        """The index's CRS, or for a raster without one, the CRS QGIS gave its layer (same pixel coordinates)."""
        if crs.isValid():
            return crs
        layer = raster_layer_for(raster, self.project)
        return layer.crs() if layer is not None else self.iface.mapCanvas().mapSettings().destinationCrs()

    def show_outcome(self, outcome: SearchOutcome) -> None:
        layer = raster_layer_for(outcome.raster, self.project)
        outcome.crs = self.display_crs(outcome.crs, outcome.raster)
        self.outcome = outcome
        self.dock.show_hits(outcome.title, outcome.hits, lambda hit: tile_thumbnail(layer, hit.rectangle()))
        if outcome.hits:
            self.results.show(outcome.title, outcome.hits, outcome.crs)
        else:
            self.results.clear()

    # -- results on the map ------------------------------------------------------------

    def activate(self, hit: Hit) -> None:
        if self.outcome is None:
            return
        canvas = self.iface.mapCanvas()
        zoom_to(canvas, [hit.rectangle()], self.outcome.crs, margin=1.6)
        flash(canvas, hit.rectangle(), self.outcome.crs)

    def zoom_all(self) -> None:
        if self.outcome is not None and self.outcome.hits:
            zoom_to(self.iface.mapCanvas(), [hit.rectangle() for hit in self.outcome.hits], self.outcome.crs)

    def export(self, path: Optional[str] = None) -> Optional[str]:
        layer = self.results.layer()
        if layer is None:
            self.dock.set_status("Nothing to export: search first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.dock, "Export results", "tilescribe_results.gpkg",
                                                  "GeoPackage (*.gpkg)")
        if not path:
            return None
        try:
            export_geopackage(layer, path)
        except (TileScribeError, WorkerError) as exc:
            self.messages.error("Export failed", exc)
            return None
        self.messages.success(f"Exported {layer.featureCount()} results to {path}.")
        return path

    def clear(self) -> None:
        self.results.clear()
        self.dock.clear_results()
        self.outcome = None
