"""Layers that are not raster files (WMS/WMTS/XYZ, ...): drawn by QGIS's own renderer into a GeoTIFF.

Processing's "Convert map to raster" (native:rasterize) draws the layer tile by tile over the chosen
extent at the chosen resolution, honouring Cancel between tiles; GDAL then crops its output to the
extent, compresses it and tags it with where it came from (SOURCE_TAG: provider, URL without
credentials, layer, extent, resolution, CRS, time), which the index copies (rasters.source). The file
is named after the layer and a digest of all that, so the same request finds it already rendered
(indexing it again resumes) and another extent or resolution never overwrites it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit, urlunsplit

from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsMapLayerType,
                       QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsProviderRegistry, QgsRectangle,
                       QgsReferencedRectangle, QgsTask)

from ..core.errors import RasterError, TileScribeError
from ..core.indexing.render_plan import RenderPlan, render_plan
from ..core.provenance import SOURCE_TAG
from .task_result import TaskResult

RENDER_TILE_PX = 512  # native:rasterize's own tiles (a render job each)
TERMS_NOTE = ("The basemap's terms of use apply: TileScribe saves its imagery as a GeoTIFF and sends "
              "tiles of it to the captioning model. Make sure they allow that.")


def is_file_raster(layer) -> bool:
    """A raster layer GDAL reads from a local file (indexed as it is)."""
    if layer is None or layer.type() != QgsMapLayerType.RasterLayer or layer.providerType() != "gdal":
        return False
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or ""
    return bool(path) and Path(path).is_file()


def needs_render(layer) -> bool:
    """A raster layer QGIS draws that is not a local file: a web layer, a database raster, ..."""
    return layer is not None and layer.type() == QgsMapLayerType.RasterLayer and not is_file_raster(layer)


def public_url(layer) -> str:
    """The layer's URL without credentials or query (API keys live there): what the index may record."""
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    url = str(parts.get("url") or parts.get("path") or "")
    try:
        split = urlsplit(url)
    except ValueError:
        return ""
    host = split.hostname or ""
    if split.port:
        host += f":{split.port}"
    return urlunsplit((split.scheme, host, split.path, "", ""))


@dataclass(frozen=True)
class RenderRequest:
    """One layer to draw into `path` over `extent` (in `crs`) at `resolution` map units per pixel."""

    layer_id: str
    layer_name: str
    extent: tuple  # (xmin, ymin, xmax, ymax) in crs
    crs: str  # authid, or WKT when the CRS has none
    resolution: float
    path: str
    plan: RenderPlan
    source: dict

    def rendered(self) -> bool:
        return Path(self.path).is_file()


def render_crs(layer) -> QgsCoordinateReferenceSystem:
    """Rendered in the layer's own CRS: no reprojection of the basemap's pixels."""
    return layer.crs()


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    return crs.authid() or crs.toWkt()


def default_resolution(canvas, crs: QgsCoordinateReferenceSystem) -> float:
    """Map units (of `crs`) per pixel as the map view shows it now; 1.0 without a view."""
    if canvas is None or canvas.width() < 2:
        return 1.0
    extent = in_crs(canvas.extent(), canvas.mapSettings().destinationCrs(), crs)
    resolution = extent.width() / canvas.width() if extent is not None else 0.0
    return float(f"{resolution:.3g}") if resolution > 0 else 1.0


def in_crs(rect: QgsRectangle, source: QgsCoordinateReferenceSystem,
           target: QgsCoordinateReferenceSystem) -> Optional[QgsRectangle]:
    if not source.isValid() or not target.isValid() or source == target:
        return QgsRectangle(rect)
    try:
        return QgsCoordinateTransform(source, target, QgsProject.instance()).transformBoundingBox(rect)
    except Exception:  # QgsCsException: no transform between them
        return None


def plan_request(layer, extent: QgsRectangle, resolution: float, folder: str, tile_size: int,
                 overlap: int) -> RenderRequest:
    """The request for one layer (extent in the layer's CRS), or a TileScribeError naming what to change."""
    crs = render_crs(layer)
    plan = render_plan(extent.width(), extent.height(), resolution, tile_size, overlap)
    if not folder.strip():
        raise RasterError("Choose a folder for the rendered GeoTIFF (beside the project by default; "
                          "this project is not saved yet).")
    if not Path(folder).is_dir():
        raise RasterError(f"The folder for the rendered GeoTIFF does not exist: {folder}. Choose an existing folder.")
    box = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    source = {"provider": layer.providerType(), "url": public_url(layer), "layer": layer.name(),
              "extent": [round(v, 9) for v in box], "crs": crs_text(crs), "resolution": resolution}
    # The digest covers the whole data source (credentials included) without recording it.
    digest = hashlib.sha256(json.dumps([layer.source(), source], sort_keys=True).encode()).hexdigest()[:10]
    name = re.sub(r"[^\w.-]+", "_", layer.name()).strip("._") or "layer"
    path = str(Path(folder) / f"{name[:60]}-{digest}.tif")
    return RenderRequest(layer.id(), layer.name(), box, crs_text(crs), resolution, path, plan, source)


def rasterize_algorithm():
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("native:rasterize")
    if algorithm is None:
        raise RasterError("QGIS's Processing algorithm 'Convert map to raster' (native:rasterize) is not "
                          "available: enable the Processing plugin (Plugins > Manage and Install Plugins).")
    return algorithm


def partial_path(request: RenderRequest) -> str:
    """Where native:rasterize writes (removed once cropped into request.path, or on failure)."""
    return str(Path(request.path).with_suffix(".partial.tif"))


def rasterize_parameters(request: RenderRequest, output: str) -> dict:
    extent = QgsReferencedRectangle(QgsRectangle(*request.extent), QgsCoordinateReferenceSystem(request.crs))
    return {"EXTENT": extent, "EXTENT_BUFFER": 0, "TILE_SIZE": RENDER_TILE_PX,
            "MAP_UNITS_PER_PIXEL": request.resolution, "MAKE_BACKGROUND_TRANSPARENT": False,
            "LAYERS": [request.layer_id], "OUTPUT": output}


def render_here(request: RenderRequest, context, feedback) -> bool:
    """Renders in the calling thread (a Processing algorithm's); False when cancelled."""
    partial = partial_path(request)
    try:
        _results, ok = rasterize_algorithm().run(rasterize_parameters(request, partial), context, feedback)
        if feedback.isCanceled():
            return False
        if not ok:
            raise RasterError(f"QGIS could not render '{request.layer_name}' (see the log above).")
        finish_geotiff(partial, request)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.remove(partial)


class RenderTask(QgsTask):
    """Draws one layer into its GeoTIFF: prepared in the GUI thread (the algorithm copies the layer
    there), rendered and written in the task's thread, handed back to `on_done` in the GUI thread."""

    def __init__(self, request: RenderRequest, on_done: Callable[[TaskResult], None]):
        super().__init__(f"TileScribe: rendering {request.layer_name}", QgsTask.CanCancel)
        self.request, self.on_done = request, on_done
        self.result = TaskResult()
        self.partial = partial_path(request)
        self.feedback = QgsProcessingFeedback()
        self.feedback.progressChanged.connect(lambda value: self.setProgress(0.95 * value))
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.algorithm = rasterize_algorithm()
        layer = QgsProject.instance().mapLayer(request.layer_id)
        if layer is None:
            raise RasterError(f"The layer '{request.layer_name}' was removed from the project: add it again.")
        self.parameters = rasterize_parameters(request, self.partial)
        if not self.algorithm.prepare(self.parameters, self.context, self.feedback):
            raise RasterError(f"QGIS could not prepare the rendering of '{request.layer_name}'.")

    def cancel(self) -> None:
        self.feedback.cancel()
        super().cancel()

    def run(self) -> bool:
        try:
            self.algorithm.runPrepared(self.parameters, self.context, self.feedback)
            if self.feedback.isCanceled():
                self.result.cancelled = True
            else:
                finish_geotiff(self.partial, self.request)
                self.result.value = self.request.path
        except TileScribeError as exc:
            self.result.error = exc
        except Exception as exc:  # QgsProcessingException, GDAL: the message names what failed
            self.result.error = RasterError(f"Rendering '{self.request.layer_name}' failed: {exc}"
                                            f"\n{traceback.format_exc(limit=3)}")
        finally:
            with contextlib.suppress(OSError):
                os.remove(self.partial)
        self.result.cancelled = self.result.cancelled or self.isCanceled()
        return self.result.error is None and not self.result.cancelled

    def finished(self, ok: bool) -> None:
        self.on_done(self.result)


def finish_geotiff(partial: str, request: RenderRequest) -> None:
    """Crop the rendered tiles to the extent's pixels, compress, tag the source; then the final name."""
    from osgeo import gdal

    source = dict(request.source, rendered_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    target = request.path + ".writing.tif"
    dataset = gdal.Translate(
        target, partial, srcWin=[0, 0, request.plan.width_px, request.plan.height_px],
        creationOptions=["COMPRESS=DEFLATE", "TILED=YES", "PREDICTOR=2"],
        metadataOptions=[f"{SOURCE_TAG}={json.dumps(source, sort_keys=True)}"])
    if dataset is None:
        raise RasterError(f"Cannot write {target}: {gdal.GetLastErrorMsg() or 'GDAL gave no reason'}. "
                          "Check the folder is writable and the disk is not full.")
    dataset = None  # closes (and flushes) it
    os.replace(target, request.path)
