"""The runs of an index file (one per raster x model x tile size) as the dock lists and searches them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from qgis.core import QgsCoordinateReferenceSystem

from ..core.errors import QueryError
from .wording import count


@dataclass(frozen=True)
class RunChoice:
    """One run of an index, from the worker's `runs` reply (cheap reads: no vector scan)."""

    db: str
    id: int
    model: str
    tile_size: int
    tiles_done: int
    vectors: int
    date: str
    raster: str
    crs_wkt: str
    placeholder: bool  # captioned by the test model: its captions say nothing about the tiles

    @classmethod
    def from_json(cls, db: str, data: dict) -> "RunChoice":
        captioner = data.get("captioner") or {}
        date = (data.get("finished_at") or data.get("started_at") or "")[:16].replace("T", " ")
        return cls(db, int(data["id"]), model_label(captioner), int(data["tile_size"]), int(data["tiles_done"]),
                   int(data.get("vectors", 0)), date, data.get("raster", ""), data.get("crs_wkt", ""),
                   is_placeholder(captioner))

    def label(self) -> str:
        """What the run picker shows: model, tile size, tiles, date."""
        return f"{self.model}, {self.tile_size} px tiles, {count(self.tiles_done, 'tile')}, {self.date}"

    def short(self) -> str:
        """Names the run that answered a search, in the dock's status line."""
        return f"run {self.id} ({self.model}, {self.tile_size} px)"

    def crs(self) -> QgsCoordinateReferenceSystem:
        """The CRS recorded in the index; invalid for a raster in pixel coordinates."""
        return QgsCoordinateReferenceSystem.fromWkt(self.crs_wkt) if self.crs_wkt else QgsCoordinateReferenceSystem()


# The test model's files (core/captioning/tiny_gguf.py: TEXT_FILE, and its projectors "tiny-*mmproj*").
TEST_MODEL_FILES = ("tiny-llava-text.gguf",)


def _file_name(value) -> str:
    return (value.get("name") if isinstance(value, dict) else value) or ""


def is_placeholder(captioner: dict) -> bool:
    """Written by the tiny random-weight test model (the run record names its files)."""
    if captioner.get("test_model"):  # the worker's settings record, should a run keep one
        return True
    projector = Path(_file_name(captioner.get("mmproj"))).name
    return (Path(_file_name(captioner.get("model"))).name in TEST_MODEL_FILES
            or (projector.startswith("tiny-") and "mmproj" in projector))


def model_label(captioner: dict) -> str:
    """A short human name of the captioner a run used."""
    if is_placeholder(captioner):
        return "test model (placeholder captions)"
    if captioner.get("backend") == "import":
        return f"imported captions ({captioner.get('file', '?')})"
    if captioner.get("server_model") or captioner.get("endpoint"):
        return f"{captioner.get('server_model') or captioner.get('model')} via server"
    model = _file_name(captioner.get("model"))
    if model:
        return Path(model).name
    return str(captioner.get("backend") or "unknown model")


def runs_from_reply(db: str, reply: Sequence[dict]) -> list[RunChoice]:
    return [RunChoice.from_json(db, data) for data in reply]


def raster_count(runs: Sequence[RunChoice]) -> int:
    """How many rasters the runs cover: several in the Index dialog's project index (one run each), whose
    runs are then no choice for the Run box. By file name: a raster moved with its index and indexed again
    is recorded under its new path, and is still one raster with an older and a newer run."""
    return len({Path(run.raster).name for run in runs})


def default_run(runs: Sequence[RunChoice]) -> Optional[RunChoice]:
    """The newest run with captioned tiles (runs come newest first)."""
    return next((run for run in runs if run.tiles_done), None)


def searchable(db: str, runs: Sequence[RunChoice], run_id: Optional[int] = None) -> RunChoice:
    """The run to search: `run_id`'s, or the newest captioned one; a QueryError when there is none."""
    if run_id is not None:
        run = next((run for run in runs if run.id == run_id), None)
        if run is None:
            raise QueryError(f"{Path(db).name} has no run {run_id} any more: pick a run in the dock.")
        return run
    run = default_run(runs)
    if run is None:
        raise QueryError(f"{Path(db).name} has no captioned tiles yet: index a raster into it first.")
    return run
