"""One small QgsTask per job; run() talks to the worker only, finished() hands a TaskResult to the GUI."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransformContext, QgsPointXY, QgsTask

from ..core.errors import QueryError, TileScribeError
from .deps import SEARCH_MODULES, check_environment
from .indexing import IndexOutcome, IndexRequest
from .results import Hit, SearchOutcome, SearchParams, point_in_crs, raster_crs, searchable_run
from .worker_client import WorkerClient


@dataclass
class TaskResult:
    value: object = None
    error: Optional[Exception] = None
    cancelled: bool = False


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

    def index_info(self, db: str) -> tuple[Optional[int], QgsCoordinateReferenceSystem, str]:
        """(searchable run, raster CRS, raster path) of an index file."""
        info = self.client.request("info", db=db)
        run_id, raster = searchable_run(info)
        if run_id is None:
            raise QueryError(f"{db} has no captioned tiles yet: index a raster into it first.")
        return run_id, raster_crs(raster), raster.get("path", "")


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


class SearchTask(WorkerTask):
    def __init__(self, client: WorkerClient, params: SearchParams, on_done):
        super().__init__(f"TileScribe: searching '{params.query[:40]}'", client, on_done)
        self.params = params

    def work(self) -> SearchOutcome:
        run_id, crs, raster = self.index_info(self.params.db)
        extent = self.params.extent.in_crs(crs) if self.params.extent else None
        hits = self.client.request("search", db=self.params.db, query=self.params.query, k=self.params.k,
                                   run_id=run_id, extent=extent)
        return SearchOutcome(self.params.query, self.params.db, [Hit.from_json(h) for h in hits], crs, raster)


class SimilarTask(WorkerTask):
    def __init__(self, client: WorkerClient, db: str, tile_db_id: int, tile_id: str, k: int, on_done):
        super().__init__(f"TileScribe: tiles similar to {tile_id}", client, on_done)
        self.db, self.tile_db_id, self.tile_id, self.k = db, tile_db_id, tile_id, k

    def work(self) -> SearchOutcome:
        _, crs, raster = self.index_info(self.db)
        hits = self.client.request("similar", db=self.db, tile_db_id=self.tile_db_id, k=self.k)
        return SearchOutcome(f"similar to tile {self.tile_id}", self.db, [Hit.from_json(h) for h in hits],
                             crs, raster)


@dataclass
class TileCaptions:
    db: str
    record: Optional[dict]  # the worker's tile record (captions, bbox, window), None: no tile there
    crs: QgsCoordinateReferenceSystem
    raster: str


class TileAtTask(WorkerTask):
    def __init__(self, client: WorkerClient, db: str, point: QgsPointXY, point_crs: QgsCoordinateReferenceSystem,
                 context: QgsCoordinateTransformContext, on_done):
        super().__init__("TileScribe: captions of a tile", client, on_done)
        self.db, self.point, self.point_crs, self.context = db, point, point_crs, context

    def work(self) -> TileCaptions:
        run_id, crs, raster = self.index_info(self.db)
        point = point_in_crs(self.point, self.point_crs, crs, self.context)
        record = self.client.request("tile_at", db=self.db, run_id=run_id, x=point.x(), y=point.y())
        return TileCaptions(self.db, record, crs, raster)


class TaskRunner:
    """Keeps started tasks alive until they finish; after close() their results are dropped."""

    def __init__(self):
        self.tasks: set = set()
        self.closed = False

    def start(self, task: WorkerTask) -> WorkerTask:
        on_done = task.on_done

        def done(result: TaskResult, task=task):
            self.tasks.discard(task)
            if not self.closed:  # the plugin was unloaded: its widgets are gone
                on_done(result)

        task.on_done = done
        self.tasks.add(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def close(self) -> None:
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
