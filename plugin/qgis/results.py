"""Search parameters and results as plain data, and the CRS work around them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsPointXY,
    QgsRectangle,
)

from ..core.errors import QueryError
from .runs import RunChoice


@dataclass(frozen=True)
class Hit:
    """One ranked tile; `bbox` is in the raster's CRS. `index`: the index file it came from
    (set by a search over several indexes; "" means the one index searched)."""

    rank: int
    score: float
    bbox: tuple[float, float, float, float]
    caption: str
    tile_id: str
    tile_db_id: int
    run_id: int
    raster: str
    window: tuple[int, int, int, int]
    index: str = ""

    @classmethod
    def from_json(cls, data: dict) -> "Hit":
        return cls(int(data["rank"]), float(data["score"]), tuple(data["bbox"]), data.get("caption", ""),
                   data["tile_id"], int(data["tile_db_id"]), int(data["run_id"]), data.get("raster", ""),
                   tuple(data["window"]), data.get("index", ""))

    def rectangle(self) -> QgsRectangle:
        return QgsRectangle(*self.bbox)


class ExtentFilter:
    """The map extent a search is limited to, in the canvas CRS (transformed in the task).

    Copies of the canvas's values, made in the GUI thread: the task reads them in another thread.
    """

    def __init__(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem,
                 context: Optional[QgsCoordinateTransformContext] = None):
        self.rect = QgsRectangle(rect)
        self.crs = QgsCoordinateReferenceSystem(crs)
        self.context = QgsCoordinateTransformContext(context) if context is not None \
            else QgsCoordinateTransformContext()

    def in_crs(self, target: QgsCoordinateReferenceSystem) -> list[float]:
        rect = self.rect
        if target.isValid() and self.crs.isValid() and target != self.crs:
            try:
                rect = QgsCoordinateTransform(self.crs, target, self.context).transformBoundingBox(rect)
            except QgsCsException:
                pass  # cannot transform: the whole index is searched rather than nothing
        return [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]


@dataclass
class SearchParams:
    db: str  # the one index searched, "" when `dbs` names several
    query: str
    k: int  # the dock's Results box (its default: Settings.k)
    extent: Optional[ExtentFilter] = None
    run: Optional[RunChoice] = None  # None: the task reads the runs and takes the newest captioned one
    dbs: tuple = ()  # several indexes: one merged ranking, each raster at its latest captioned run
    # The runs the dock has read already, by index file: a hit of a known run costs no `runs` request
    # (at 1M tiles one costs ~50 ms: it counts the captioned tiles).
    known_runs: dict = field(default_factory=dict)


@dataclass
class SearchOutcome:
    """What the dock lists and the highlight layer draws; `run` answered, `runs` are set when the task read them.

    A search over several indexes (`dbs`) has `db` "", `run` the best hit's run and `hit_runs` the run of
    every hit, by (index file, run id); `hit_crs` (set by the controller) the CRS each hit's box is in,
    and `crs` the CRS the highlight layer is drawn in."""

    title: str
    db: str
    hits: list[Hit]
    run: RunChoice
    runs: Optional[list] = None
    crs: QgsCoordinateReferenceSystem = field(default_factory=QgsCoordinateReferenceSystem)
    dbs: tuple = ()
    hit_runs: dict = field(default_factory=dict)
    hit_crs: dict = field(default_factory=dict)
    in_extent: bool = False  # only tiles in the map extent were searched
    other_embedders: dict = field(default_factory=dict)  # index file -> embedder: left out, never mixed in
    notes: list = field(default_factory=list)  # why the worker left an index or run out, one line each
    runs_by_db: dict = field(default_factory=dict)  # the runs of the hits' indexes (read or known)

    @property
    def raster(self) -> str:
        return self.run.raster

    @property
    def indexes(self) -> list[str]:
        """The index files searched."""
        return list(self.dbs) or [self.db]

    def key(self, hit: Hit) -> tuple[str, int]:
        return (hit.index or self.db, hit.run_id)

    def run_of(self, hit: Hit) -> RunChoice:
        return self.hit_runs.get(self.key(hit), self.run)

    def crs_of(self, hit: Hit) -> QgsCoordinateReferenceSystem:
        return self.hit_crs.get(self.key(hit), self.crs)

    def hits_with_sources(self) -> list[Hit]:
        """The hits with their index and raster files filled in (a one-index search leaves them to the
        outcome): what a layer kept or exported records."""
        return [replace(hit, index=hit.index or self.db, raster=hit.raster or self.run_of(hit).raster)
                for hit in self.hits]


def point_in_crs(point: QgsPointXY, source: QgsCoordinateReferenceSystem,
                 target: QgsCoordinateReferenceSystem, context: QgsCoordinateTransformContext) -> QgsPointXY:
    """`point` in the target CRS; unchanged when either CRS is unknown (pixel coordinates)."""
    if not (source.isValid() and target.isValid()) or source == target:
        return QgsPointXY(point)
    try:
        return QgsCoordinateTransform(source, target, context).transform(point)
    except QgsCsException as exc:
        raise QueryError(f"The clicked point cannot be placed in the index's CRS ({target.authid()}).") from exc
