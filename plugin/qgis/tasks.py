"""One small QgsTask per job; run() talks to the worker only, finished() hands a TaskResult to the GUI."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransformContext, QgsPointXY, QgsTask

from ..core.errors import QueryError, TileScribeError
from .deps import SEARCH_MODULES, check_environment
from .indexing import IndexOutcome, IndexRequest
from .task_result import TaskResult
from .results import Hit, SearchOutcome, SearchParams, point_in_crs
from .runs import RunChoice, raster_count, runs_from_reply, searchable
from ..worker.client import WorkerClient


class WorkerTask(QgsTask):
    """Base: checks the worker's environment, runs `work()`, keeps any error for the GUI."""

    needs: tuple = SEARCH_MODULES

    def __init__(self, description: str, client: WorkerClient, on_done: Callable[[TaskResult], None]):
        super().__init__(description, QgsTask.CanCancel)
        self.client = client
        self.on_done = on_done
        self.result = TaskResult()

    def run(self) -> bool:
        try:
            check_environment(self.client, self.needs)
            self.result.value = self.work()
        except TileScribeError as exc:
            self.result.error = exc
        except Exception as exc:  # a bug: show it rather than lose it in a thread
            self.result.error = RuntimeError(f"{exc!r}\n{traceback.format_exc(limit=4)}")
        self.result.cancelled = self.isCanceled()
        return self.result.error is None

    def finished(self, ok: bool) -> None:
        self.on_done(self.result)

    def work(self):
        raise NotImplementedError

    def runs_of(self, db: str) -> list[RunChoice]:
        """The index's runs, newest first: cheap reads in the worker (no count over the vectors)."""
        return runs_from_reply(db, self.client.request("runs", db=db))


class IndexTask(WorkerTask):
    def __init__(self, client: WorkerClient, request: IndexRequest, on_done):
        super().__init__(f"TileScribe: indexing {request.layer_name}", client, on_done)
        self.request = request
        self.needs = request.needed_modules()

    def work(self) -> IndexOutcome:
        result = self.client.request("index", **self.request.worker_args(), on_event=self._event,
                                     cancelled=self.isCanceled)
        return IndexOutcome.from_result(self.request, result)

    def _event(self, kind: str, data: dict) -> None:
        if kind == "progress" and data.get("total"):
            self.setProgress(100.0 * data["finished"] / data["total"])


class RunsTask(WorkerTask):
    """Lists an index's runs for the dock's run picker."""

    def __init__(self, client: WorkerClient, db: str, on_done):
        super().__init__(f"TileScribe: reading {Path(db).name}", client, on_done)
        self.db = db

    def work(self) -> list[RunChoice]:
        return self.runs_of(self.db)


class SearchTask(WorkerTask):
    """One `search` request on the run the dock chose (its runs are fetched first only when unknown)."""

    def __init__(self, client: WorkerClient, params: SearchParams, on_done):
        super().__init__(f"TileScribe: searching '{params.query[:40]}'", client, on_done)
        self.params = params

    def work(self) -> SearchOutcome:
        params = self.params
        if params.dbs:
            return self._project(params.dbs)
        runs = None if params.run is not None else self.runs_of(params.db)
        if runs is not None and raster_count(runs) > 1:
            # One index of several rasters (the Index dialog's project index): every raster at its
            # latest run, ranked together, as when several indexes are ticked; the Run box is for one raster.
            return self._project((params.db,))
        run = params.run or searchable(params.db, runs)
        extent = params.extent.in_crs(run.crs()) if params.extent else None
        hits = self.client.request("search", db=params.db, query=params.query, k=params.k, run_id=run.id,
                                   extent=extent)
        return SearchOutcome(params.query, params.db, [Hit.from_json(h) for h in hits], run, runs,
                             in_extent=params.extent is not None)


    def _project(self, dbs) -> SearchOutcome:
        """Every ticked index in one ranking (the worker's `dbs`); each hit's run read back for its CRS."""
        params = self.params
        extent, extent_crs = None, None
        if params.extent is not None:
            extent = params.extent.in_crs(params.extent.crs)
            crs = params.extent.crs
            extent_crs = (crs.authid() or crs.toWkt()) if crs.isValid() else None
            if extent_crs is None:
                extent = None  # a map in pixel coordinates: nothing to transform it by
        left_out: dict = {}

        def on_event(kind: str, data: dict) -> None:
            if kind == "left_out":
                left_out.update(data)

        # An index of another embedding model is left out (named in the outcome), never mixed in: the
        # others still answer.
        hits = [Hit.from_json(h) for h in self.client.request(
            "search", dbs=list(dbs), query=params.query, k=params.k, extent=extent, extent_crs=extent_crs,
            other_embedders="skip", on_event=on_event)]
        hit_runs, runs_by_db = {}, {}
        for db in dict.fromkeys(hit.index for hit in hits):
            runs = params.known_runs.get(db)
            if runs is None or not {hit.run_id for hit in hits if hit.index == db} <= {run.id for run in runs}:
                runs = self.runs_of(db)  # not read yet, or indexed again since
            runs_by_db[db] = runs
            for run in runs:
                hit_runs[(db, run.id)] = run
        best = hit_runs[(hits[0].index, hits[0].run_id)] if hits else self._any_run(dbs)
        return SearchOutcome(params.query, "", hits, best, None, dbs=tuple(dbs), hit_runs=hit_runs,
                             in_extent=params.extent is not None,
                             other_embedders=dict(left_out.get("other_embedders") or {}),
                             notes=list(left_out.get("notes") or []), runs_by_db=runs_by_db)


    def _any_run(self, dbs) -> RunChoice:
        """No hit (the extent left none): the first index with a captioned run names the outcome."""
        problem = None
        for db in dbs:
            try:
                return searchable(db, self.runs_of(db))
            except QueryError as exc:
                problem = exc
        raise problem


class SimilarTask(WorkerTask):
    def __init__(self, client: WorkerClient, db: str, tile_db_id: int, tile_id: str, k: int,
                 run: Optional[RunChoice], run_id: int, on_done):
        super().__init__(f"TileScribe: tiles similar to {tile_id}", client, on_done)
        self.db, self.tile_db_id, self.tile_id, self.k = db, tile_db_id, tile_id, k
        self.run, self.run_id = run, run_id

    def work(self) -> SearchOutcome:
        runs = None if self.run is not None else self.runs_of(self.db)
        run = self.run or searchable(self.db, runs, self.run_id)
        hits = self.client.request("similar", db=self.db, tile_db_id=self.tile_db_id, k=self.k)
        return SearchOutcome(f"similar to tile {self.tile_id}", self.db, [Hit.from_json(h) for h in hits],
                             run, runs)


@dataclass
class TileCaptions:
    db: str  # the index the tile was found in (the first searched when none was)
    record: Optional[dict]  # the worker's tile record (captions, bbox, window), None: no tile there
    run: RunChoice
    runs: Optional[list] = None  # the index's runs when the task had to read them
    searched: tuple = ()  # every index file asked


class TileAtTask(WorkerTask):
    """The tile under a clicked point, in the first of `dbs` that has one there (each raster of an index
    at its latest captioned run, or `run` for the index the Run box shows).

    Every value is copied here, in the GUI thread: the map tool's point is a reference into its mouse
    event, freed once the click is handled (read later in run(), it held garbage such as 6.9e-310)."""

    def __init__(self, client: WorkerClient, dbs, run: Optional[RunChoice], point: QgsPointXY,
                 point_crs: QgsCoordinateReferenceSystem, context: QgsCoordinateTransformContext, on_done):
        super().__init__("TileScribe: captions of a tile", client, on_done)
        self.dbs = [dbs] if isinstance(dbs, str) else list(dbs)
        self.db, self.run = self.dbs[0], run
        self.point = QgsPointXY(point.x(), point.y())
        self.point_crs = QgsCoordinateReferenceSystem(point_crs)
        self.context = QgsCoordinateTransformContext(context)

    def work(self) -> TileCaptions:
        first: Optional[TileCaptions] = None
        for db in self.dbs:
            chosen = self.run if self.run is not None and self.run.db == db else None
            runs = None if chosen is not None else self.runs_of(db)
            if chosen is not None:
                candidates = [chosen]
            else:
                try:
                    candidates = latest_per_raster(runs) or [searchable(db, runs)]
                except QueryError:
                    if len(self.dbs) == 1:
                        raise
                    continue  # nothing captioned in this one: the others may have the tile
            for run in candidates:
                try:
                    point = point_in_crs(self.point, self.point_crs, run.crs(), self.context)
                except QueryError:
                    if len(self.dbs) == 1:
                        raise
                    continue
                record = self.client.request("tile_at", db=db, run_id=run.id, x=point.x(), y=point.y())
                if record is not None:
                    return TileCaptions(db, record, run, runs, tuple(self.dbs))
                first = first or TileCaptions(db, None, run, runs, tuple(self.dbs))
        if first is None:
            raise QueryError("None of the searched indexes has captioned tiles yet: index a raster first.")
        return first


def latest_per_raster(runs) -> list[RunChoice]:
    """Each raster's newest captioned run (runs come newest first): what a project search reads."""
    latest: dict[str, RunChoice] = {}
    for run in runs:
        if run.tiles_done and run.raster not in latest:
            latest[run.raster] = run
    return list(latest.values())


class TaskRunner:
    """Keeps started tasks alive until they finish; after close() their results are dropped."""

    def __init__(self):
        self.tasks: dict = {}  # a dict keeps the order they started in
        self.closed = False

    def start(self, task: WorkerTask) -> WorkerTask:
        on_done = task.on_done

        def done(result: TaskResult, task=task):
            self.tasks.pop(task, None)
            if not self.closed:  # the plugin was unloaded: its widgets are gone
                on_done(result)

        task.on_done = done
        self.tasks[task] = None
        QgsApplication.taskManager().addTask(task)
        return task

    def close(self) -> None:
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
