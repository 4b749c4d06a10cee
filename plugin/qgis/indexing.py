"""What an index job needs (checked before anything starts) and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from qgis.core import QgsMapLayerType, QgsProject, QgsProviderRegistry, QgsRasterLayer

from ..core.captioning.factory import CaptionerSettings
from ..core.errors import ModelError, RasterError
from ..core.models.folder import family_for_model
from ..core.indexing.index_settings import IndexSettings, default_index_path
from .wording import count
from .deps import INDEX_MODULES, LOCAL_MODEL_MODULES
from .settings import CAPTIONER_LOCAL, CAPTIONER_SERVER, CAPTIONER_TEST, PluginSettings

if TYPE_CHECKING:  # web_render imports tasks, which imports this module
    from .web_render import RenderRequest


@dataclass(frozen=True)
class IndexRequest:
    """One raster to index with one captioner; the index dialog's answer."""

    layer_name: str
    raster: str
    db: str
    captioner: CaptionerSettings
    tile_size: int = IndexSettings.tile_size
    overlap: int = IndexSettings.overlap
    variants: int = IndexSettings.variants
    render: Optional["RenderRequest"] = None  # a layer that is not a file: drawn into `raster` first

    def worker_args(self) -> dict:
        index = {"tile_size": self.tile_size, "overlap": self.overlap, "variants": self.variants}
        return {"db": self.db, "raster": self.raster, "captioner": self.captioner.to_dict(), **index}

    def needed_modules(self) -> tuple:
        return INDEX_MODULES if self.captioner.server_url else LOCAL_MODEL_MODULES


@dataclass
class IndexOutcome:
    """The worker's report of one index job."""

    layer_name: str
    db: str
    run_id: int
    total: int
    done: int
    skipped: int
    failed: int
    cancelled: bool
    placeholder: bool
    captioned_now: int = 0  # tiles captioned by this job (a resumed job skips those done before)
    failures: list = field(default_factory=list)
    engine: str = ""  # which engine, llama.cpp build and device captioned (core engine_info)

    @classmethod
    def from_result(cls, request: IndexRequest, result: dict) -> "IndexOutcome":
        return cls(request.layer_name, request.db, result["run_id"], result["total"], result["done"],
                   result["skipped"], result["failed"], bool(result["cancelled"]),
                   bool(result.get("placeholder")), int(result.get("captioned_now", 0)),
                   list(result.get("failures") or []), str(result.get("engine") or ""))

    def summary(self) -> str:
        parts = [f"{self.done} of {count(self.total, 'tile')} captioned"]
        if self.captioned_now != self.done:
            parts.append(f"{self.captioned_now} in this run")
        if self.skipped:
            parts.append(f"{count(self.skipped, 'empty tile')} skipped")
        if self.failed:
            reason = f" ({self.failures[0][1]})" if self.failures else ""
            parts.append(f"{self.failed} failed{reason}")
        from .postgres_connections import display_name  # a PostgreSQL index by its connection and schema

        text = f"{', '.join(parts)}, in {display_name(self.db)}."
        if self.engine:
            text += f" Captioned with {self.engine}."
        if self.cancelled:
            return f"Indexing of {self.layer_name} stopped: {text} Run Index layer again to continue."
        if self.placeholder:
            text += " The test model wrote placeholder captions: searches will not be meaningful."
        return f"Indexed {self.layer_name}: {text}"


def raster_file(layer) -> str:
    """Path of a file-based GDAL raster layer, or a RasterError saying why it cannot be indexed."""
    if layer is None:
        raise RasterError("No raster layer selected: load a raster (GeoTIFF, VRT…) and select it.")
    if layer.type() != QgsMapLayerType.RasterLayer:
        raise RasterError(f"'{layer.name()}' is not a raster layer: select a raster layer to index.")
    if layer.providerType() != "gdal":
        raise RasterError(
            f"'{layer.name()}' comes from the '{layer.providerType()}' provider: indexing it is not "
            "supported yet. TileScribe indexes raster files read by GDAL (GeoTIFF, VRT…); save the "
            "layer as a GeoTIFF first (right click > Export > Save As…).")
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or ""
    if not path or not Path(path).is_file():
        raise RasterError(
            f"'{layer.name()}' is not a local file ({layer.source()[:120]}): indexing it is not "
            "supported yet. Save it as a GeoTIFF first (right click > Export > Save As…).")
    return path


def project_index_path(layers, render_folder: str = "") -> str:
    """One index for several layers: `<project folder>/<project name>.tilescribe.sqlite`; for a project
    not saved yet, in the folder of the first raster file (or of the rendered GeoTIFFs)."""
    from ..core.indexing.index_settings import INDEX_SUFFIX

    project = QgsProject.instance()
    if project.fileName():
        return str(Path(project.absolutePath()) / f"{project.baseName()}{INDEX_SUFFIX}")
    for layer in layers:
        try:
            return str(Path(raster_file(layer)).parent / f"project{INDEX_SUFFIX}")
        except RasterError:
            continue
    return str(Path(render_folder) / f"project{INDEX_SUFFIX}") if render_folder else ""


def index_path_beside(layer: QgsRasterLayer) -> Optional[str]:
    """The index file beside a raster layer's file, when there is one."""
    try:
        path = default_index_path(raster_file(layer))
    except RasterError:
        return None
    return path if Path(path).is_file() else None


def captioner_settings(settings: PluginSettings) -> CaptionerSettings:
    """The captioner the settings choose, or a ModelError naming what is missing."""
    if settings.captioner == CAPTIONER_TEST:
        return CaptionerSettings(test_model=True)
    if settings.captioner == CAPTIONER_SERVER:
        if not settings.server_url.strip().startswith(("http://", "https://")):
            raise ModelError("Give the server URL (http://host:port/v1) of an OpenAI-compatible server.")
        if not settings.server_model.strip():
            raise ModelError(f"Give the model name to ask {settings.server_url} for.")
        return CaptionerSettings(server_url=settings.server_url.strip(), server_model=settings.server_model.strip(),
                                 api_key_env=settings.api_key_env.strip() or None)
    if settings.captioner != CAPTIONER_LOCAL:
        raise ModelError(f"Unknown captioner choice {settings.captioner!r}: pick one in the Index layer dialog.")
    for label, value in (("model", settings.model_path), ("vision projector (mmproj)", settings.mmproj_path)):
        if not value.strip():
            raise ModelError(f"Pick the GGUF {label} file, or choose the test model or a server.")
        if not Path(value).is_file():
            raise ModelError(f"The {label} file was not found: {value}. Pick an existing GGUF file.")
    return CaptionerSettings(model=settings.model_path, mmproj=settings.mmproj_path,
                             family=family_for_model(settings.model_path), engine=settings.engine,
                             slots=settings.slots)
