"""Drives the dock: reads an index's runs, starts search tasks, shows hits in the list and on the map."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsCoordinateReferenceSystem, QgsMapLayerType, QgsPointXY, QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QFileDialog

from ..core.errors import TileScribeError
from . import postgres_connections
from .dock import IndexSource, SearchDock
from .highlight import ResultsLayer, export_geopackage, flash, keep_results, results_layer, zoom_to
from .indexing import index_path_beside, project_index_path, raster_file
from .messages import Messages, for_qgis
from .results import ExtentFilter, Hit, SearchOutcome, SearchParams, point_in_crs
from .runs import default_run
from .tasks import RunsTask, SearchTask, SimilarTask, TaskResult, TaskRunner
from .thumbnails import raster_layer_for, tile_thumbnail
from .wording import count
from ..worker.client import WorkerClient, WorkerError

# Errors about what the user typed are shown in the dock, not in the message bar.
INLINE_ERRORS = {"QueryError"}
OFFER_KEY = "offer-index"


def indexes_in_project(project: QgsProject) -> list[IndexSource]:
    """Index files lying beside the project's raster layers (<stem>.tilescribe.sqlite)."""
    found = []
    for layer in project.mapLayers().values():
        if layer.type() == QgsMapLayerType.RasterLayer:
            db = index_path_beside(layer)
            if db:  # named by its layer (the file, <stem>.tilescribe.sqlite, is in the row's tooltip)
                found.append(IndexSource(str(Path(db).resolve()), layer.name()))
    own = project_index_path(list(project.mapLayers().values()))  # the Index dialog's one for several layers
    if own and Path(own).is_file() and str(Path(own).resolve()) not in {source.db for source in found}:
        found.append(IndexSource(str(Path(own).resolve()), f"project ({Path(own).name})"))
    return sorted(found, key=lambda source: source.label.lower())


def project_folder(project: QgsProject) -> str:
    """Where files the user keeps go: beside the project file, else beside its rasters."""
    return project.absolutePath() or rasters_folder(project)


def rasters_folder(project: QgsProject) -> str:
    """Where Open… starts: beside the project's first raster file, else the project's folder."""
    for layer in project.mapLayers().values():
        if layer.type() == QgsMapLayerType.RasterLayer:
            try:
                return str(Path(raster_file(layer)).parent)
            except TileScribeError:
                continue
    return project.homePath()


class SearchController:
    def __init__(self, iface, dock: SearchDock, client: Callable[[], WorkerClient], runner: TaskRunner,
                 messages: Messages, k_default: int = 10):
        self.iface, self.dock, self.client, self.runner, self.messages = iface, dock, client, runner, messages
        self.project = QgsProject.instance()
        self.results = ResultsLayer(self.project, iface.mapCanvas())
        self.outcome: Optional[SearchOutcome] = None
        self.export_dialog: Optional[QFileDialog] = None
        self._runs: dict[str, list] = {}  # index file -> its runs as last read (a project search reuses them)
        self._serial = 0  # only the latest search's results are shown, whichever finishes first
        dock.kSpin.setValue(k_default)
        dock.start_folder = lambda: rasters_folder(self.project)
        dock.searchRequested.connect(self.search)
        dock.hitActivated.connect(self.activate)
        dock.zoomAllRequested.connect(self.zoom_all)
        dock.exportRequested.connect(self.export)
        dock.keepRequested.connect(self.keep)
        dock.runChanged.connect(self._run_changed)
        dock.clearRequested.connect(self.clear)
        dock.indexChanged.connect(self._index_changed)
        self.project.layersAdded.connect(self._layers_changed)
        self.project.layersRemoved.connect(self._layers_changed)
        self.project.cleared.connect(self._project_cleared)
        postgres_connections.install_in_dock(self)  # "PostgreSQL…" beside Open…
        self.refresh_indexes()

    def unload(self) -> None:
        self.project.layersAdded.disconnect(self._layers_changed)
        self.project.layersRemoved.disconnect(self._layers_changed)
        self.project.cleared.disconnect(self._project_cleared)
        self.results.clear()
        self.results.unload()

    def _project_cleared(self) -> None:
        """Project > Close or New: nothing of the old project stays in the dock (results, status,
        buttons, the indexes it listed, an offer about one of them)."""
        self._serial += 1  # a search still running answers for the old project: dropped
        self.messages.dismiss(OFFER_KEY)
        self.results.forget()
        self.outcome = None
        self._runs = {}
        self.dock.reset()
        self.refresh_indexes()

    # -- indexes and runs --------------------------------------------------------------

    def _layers_changed(self, layers) -> None:
        """Raster layers come and go with their indexes; our own results layer changes nothing."""
        ids = [layer if isinstance(layer, str) else layer.id() for layer in layers]
        if any(layer_id != self.results.last_id for layer_id in ids):
            self.refresh_indexes()

    def refresh_indexes(self) -> None:
        self.dock.set_indexes(indexes_in_project(self.project) + postgres_connections.indexes_in_project(self.project))

    def offer_index(self, db: str, why: str) -> None:
        """A new or updated index: searched along when the dock searches every index (or none), else
        offered; the ticks the user set are never changed silently."""
        ticked = self.dock.selected_dbs()
        db = db if postgres_connections.is_postgres(db) else str(Path(db).resolve())
        self._runs.pop(db, None)  # indexed again: its runs changed
        self.refresh_indexes()  # lists it (ticked unless the user narrowed the list) beside a raster
        if db in self.dock.selected_dbs():
            if db in ticked and db == self.dock.current_db():
                self.load_runs(db)  # same index, maybe a new run: the chosen run stays chosen
            return
        if not ticked:
            self.choose_index(db)
            return
        searched = Path(ticked[0]).name if len(ticked) == 1 else self.dock.index_summary()
        self.messages.offer(f"{why} The dock still searches {searched}.",
                            f"Search {Path(db).name}", lambda: self.choose_index(db), key=OFFER_KEY)

    def choose_index(self, db: str) -> None:
        """Search `db` only (opened first when the dock does not list it)."""
        if db not in self.dock.selected_dbs() and db not in [s for s in self.dock._listed()]:
            self.dock.open_index_file(db)
        self.dock.select_db(db)

    def _index_changed(self, db: str) -> None:
        self.messages.dismiss(OFFER_KEY)
        ticked = set(self.dock.selected_dbs())
        if self.outcome is not None and not set(self.outcome.indexes) <= ticked:
            self.clear()  # the list and the map show results of ticked indexes only, or none
        if ticked and self.dock.statusLabel.text().startswith("Choose an index first"):
            self.dock.set_status("")
        if db:
            self.load_runs(db)

    def _run_changed(self) -> None:
        """Another run chosen in the Run box: the results of the one shown before leave the list and the map."""
        self.messages.dismiss(OFFER_KEY)
        run, outcome = self.dock.current_run(), self.outcome
        if outcome is not None and not outcome.dbs and run is not None and outcome.run.id != run.id:
            self.clear()

    def load_runs(self, db: str) -> RunsTask:
        return self.runner.start(RunsTask(self.client(), db, lambda result: self._runs_loaded(db, result)))

    def _runs_loaded(self, db: str, result: TaskResult) -> None:
        if db != self.dock.current_db():
            return  # the user chose another index meanwhile
        if result.error is not None:
            self.dock.set_status(str(result.error).partition("\n")[0])
            return
        known = {run.id for run in self.dock.runs}
        self._runs[db] = result.value
        self.dock.set_runs(result.value)
        newest, chosen = default_run(self.dock.runs), self.dock.current_run()
        if known and newest is not None and chosen is not None and newest.id != chosen.id and newest.id not in known:
            # The raster was indexed again: the Run box keeps the user's run, and says there is a newer one.
            self.messages.offer(f"{Path(db).name} has a newer run: {newest.short()}, "
                                f"{count(newest.tiles_done, 'tile')}. The dock still searches {chosen.short()}.",
                                f"Search run {newest.id}", lambda: self._choose_run(db, newest.id), key=OFFER_KEY)

    def _choose_run(self, db: str, run_id: int) -> None:
        if db == self.dock.current_db():
            self.dock.choose_run(run_id)

    def index_under(self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem) -> Optional[str]:
        """The ticked index whose raster layer lies under a map point (`crs`: the map's), topmost
        layer first: what Inspect reads when several indexes are ticked."""
        ticked = set(self.dock.selected_dbs())
        for layer in self.project.layerTreeRoot().layerOrder():
            if layer.type() != QgsMapLayerType.RasterLayer:
                continue
            db = index_path_beside(layer)
            if not db or str(Path(db).resolve()) not in ticked:
                continue
            try:
                inside = point_in_crs(point, crs, layer.crs(), self.project.transformContext())
            except TileScribeError:
                continue
            if layer.extent().contains(inside):
                return str(Path(db).resolve())
        return None

    # -- searching ---------------------------------------------------------------------

    def search(self) -> Optional[SearchTask]:
        dbs, query = self.dock.selected_dbs(), self.dock.query()
        db = dbs[0] if len(dbs) == 1 else ""
        if not dbs:
            self.dock.set_status("Choose an index first: tick one, index a raster layer, or Open… an index file.")
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
        if db:
            params = SearchParams(db, query, self.dock.k(), extent, self.dock.current_run())
        else:  # every ticked index in one ranking, each raster at its latest captioned run
            params = SearchParams("", query, self.dock.k(), extent, dbs=tuple(dbs), known_runs=dict(self._runs))
        return self.runner.start(SearchTask(self.client(), params, self._latest_only()))

    def similar(self, db: str, tile_db_id: int, tile_id: str, run_id: int) -> SimilarTask:
        self.dock.setUserVisible(True)
        self.dock.set_busy(True, f"Looking for tiles like {tile_id}…")
        run = self.dock.run_by_id(run_id) if db == self.dock.current_db() else None
        return self.runner.start(SimilarTask(self.client(), db, tile_db_id, tile_id, self.dock.k(), run, run_id,
                                             self._latest_only()))

    def _latest_only(self) -> Callable[[TaskResult], None]:
        self._serial += 1
        serial = self._serial
        return lambda result: self._search_done(result) if serial == self._serial else None

    def _search_done(self, result: TaskResult) -> None:
        self.dock.set_busy(False)
        if result.error is not None:
            self.dock.set_status(for_qgis(str(result.error)).partition("\n")[0])
            if getattr(result.error, "kind", type(result.error).__name__) not in INLINE_ERRORS:
                self.messages.error("Search failed", result.error, key="search")
            return
        self.messages.dismiss("search")
        outcome = result.value
        self._runs.update(outcome.runs_by_db)
        if outcome.runs is not None:
            self._runs[outcome.db] = outcome.runs
        if outcome.runs is not None and outcome.db == self.dock.current_db():
            self.dock.set_runs(outcome.runs, select=outcome.run.id)
        self.show_outcome(outcome)

    def display_crs(self, crs: QgsCoordinateReferenceSystem, raster: str) -> QgsCoordinateReferenceSystem:
        """The index's CRS, or for a raster without one, the CRS QGIS gave its layer (same pixel coordinates)."""
        if crs.isValid():
            return crs
        layer = raster_layer_for(raster, self.project)
        return layer.crs() if layer is not None else self.iface.mapCanvas().mapSettings().destinationCrs()

    def show_outcome(self, outcome: SearchOutcome) -> None:
        outcome.crs = self.display_crs(outcome.run.crs(), outcome.raster)
        several = bool(outcome.dbs)
        if several:
            # Each hit's box is in its raster's CRS; the highlight layer takes theirs when they share
            # one, else the map's (boxes reprojected there).
            for key, run in outcome.hit_runs.items():
                outcome.hit_crs[key] = self.display_crs(run.crs(), run.raster)
            crss = {outcome.crs_of(hit).toWkt() for hit in outcome.hits}
            if len(crss) > 1:
                outcome.crs = self.iface.mapCanvas().mapSettings().destinationCrs()
            elif outcome.hits:
                outcome.crs = outcome.crs_of(outcome.hits[0])
        self.outcome = outcome
        layers = {}

        def layer_of(hit: Hit):
            raster = outcome.run_of(hit).raster or hit.raster
            if raster not in layers:
                layers[raster] = raster_layer_for(raster, self.project)
            return layers[raster]

        if several:
            thumbnail = lambda hit: tile_thumbnail(layer_of(hit), hit.rectangle())  # noqa: E731
            source = lambda hit: (layer_of(hit).name() if layer_of(hit) is not None  # noqa: E731
                                  else Path(hit.raster or outcome.run_of(hit).raster).name)
            placeholder = any(outcome.run_of(hit).placeholder for hit in outcome.hits)
        else:
            layer = layer_of(outcome.hits[0]) if outcome.hits else None
            thumbnail = (lambda hit: tile_thumbnail(layer, hit.rectangle())) if layer is not None else None
            source, placeholder = None, outcome.run.placeholder
        left_out = {str(Path(db).resolve()): embedder for db, embedder in outcome.other_embedders.items()}
        for db in outcome.dbs:  # indexed again with the dock's model: the mark goes
            self.dock.mark_other_embedder(db, other_embedder_note(left_out[db]) if db in left_out else "")
        self.dock.show_hits(outcome_status(outcome), outcome.hits, thumbnail, placeholder, source)
        self.dock.statusLabel.setToolTip("\n".join(outcome.notes))
        if outcome.hits:
            self.results.show(outcome.title, outcome.hits, outcome.crs, outcome.crs_of)
        else:
            self.results.clear()

    # -- results on the map ------------------------------------------------------------

    def activate(self, hit: Hit) -> None:
        if self.outcome is None:
            return
        canvas = self.iface.mapCanvas()
        crs = self.outcome.crs_of(hit)
        zoom_to(canvas, [hit.rectangle()], crs, margin=1.6)
        flash(canvas, hit.rectangle(), crs)

    def zoom_all(self) -> None:
        if self.outcome is not None and self.outcome.hits:
            hits = self.outcome.hits
            zoom_to(self.iface.mapCanvas(), [hit.rectangle() for hit in hits],
                    [self.outcome.crs_of(hit) for hit in hits])

    def export(self, path: Optional[str] = None) -> Optional[str]:
        if self.outcome is None or not self.outcome.hits:
            self.dock.set_status("Nothing to export: search first.")
            return None
        if path is None:
            self.export_dialog = self._export_dialog()
            return None
        if not path:
            return None
        # From the listed results, not the map layer: the user may have removed that layer.
        layer = results_layer(self.outcome.title, self.outcome.hits_with_sources(), self.outcome.crs,
                              self.outcome.crs_of)
        try:
            export_geopackage(layer, path)
        except (TileScribeError, WorkerError) as exc:
            self.messages.error("Export failed", exc, key="export")
            return None
        self.messages.success(f"Exported {count(layer.featureCount(), 'result')} to {path}.", key="export")
        return path

    def _export_dialog(self) -> QFileDialog:
        """Save as…, non-modal, starting beside the project file (QGIS's working folder is nobody's)."""
        dialog = QFileDialog(self.dock, "Export results", project_folder(self.project), "GeoPackage (*.gpkg)")
        dialog.setAcceptMode(QFileDialog.AcceptSave)
        dialog.setDefaultSuffix("gpkg")
        dialog.selectFile(str(Path(project_folder(self.project)) / "tilescribe_results.gpkg"))
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.fileSelected.connect(self.export)
        dialog.open()
        return dialog

    def keep(self) -> Optional[str]:
        """The results as a layer of the project: one more table of a GeoPackage beside the project file
        (saved with the project, untouched by Clear and new searches), or, while the project has no file
        yet, a memory layer that QGIS asks to make permanent."""
        if self.outcome is None or not self.outcome.hits:
            self.dock.set_status("Nothing to keep: search first.")
            return None
        try:
            layer = keep_results(self.project, self.outcome.title, self.outcome.hits_with_sources(),
                                 self.outcome.crs, self.outcome.crs_of)
        except TileScribeError as exc:
            self.messages.error("Keeping the results failed", exc, key="keep")
            return None
        where = (f"in {Path(layer.source().split('|')[0]).name} beside the project" if layer.providerType() == "ogr"
                 else "as a temporary layer: save the project first to keep it in a GeoPackage beside it, "
                      "or right-click it > Make Permanent…")
        self.messages.success(f"Kept {count(layer.featureCount(), 'result')} as the layer “{layer.name()}” "
                              f"{where}.", key="keep")
        return layer.id()

    def clear(self) -> None:
        self.results.clear()
        self.dock.clear_results()
        self.outcome = None


def outcome_status(outcome: SearchOutcome) -> str:
    """The dock's status line: how many results, for what, and which run of which index answered."""
    if outcome.dbs:
        rasters = len({outcome.run_of(hit).raster for hit in outcome.hits})
        source = count(len(outcome.dbs), "index", "indexes") + (f" ({count(rasters, 'raster')})"
                                                                 if outcome.hits else "")
    else:
        source = f"{Path(outcome.db).name}, {outcome.run.short()}"
    where = " in the current map extent" if outcome.in_extent else ""
    left_out = ""
    if outcome.other_embedders:
        names = ", ".join(f"{Path(db).name} ({embedder})" for db, embedder in outcome.other_embedders.items())
        left_out = f" Left out, made with another embedding model: {names} (its row's tooltip says more)."
    if not outcome.hits:
        return f"No results for “{outcome.title}”{where} in {source}.{left_out}"
    return f"{count(len(outcome.hits), 'result')} for “{outcome.title}”{where} from {source}" + (
        f".{left_out}" if left_out else "")


def other_embedder_note(embedder: str) -> str:
    """The tooltip of a listed index that searches leave out."""
    return (f"Made with another embedding model ({embedder}) than the one TileScribe searches with: searches "
            "over several indexes leave it out (its scores cannot be ranked with the others), and ticked alone "
            "it is refused. Index its raster again to search it here.")
