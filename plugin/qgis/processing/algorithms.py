"""Processing algorithms: Index raster layer, Search, Import captions.

They never import a model library: each sends one request to the worker process (the
plugin's WorkerClient, as the dock does), turns its progress events into
feedback.setProgress and asks the worker to cancel when feedback.isCanceled().
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsFeatureSink, QgsField,
                       QgsFields, QgsGeometry, QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingParameterBoolean, QgsProcessingParameterCrs,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterString, QgsRasterLayer, QgsRectangle, QgsWkbTypes)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from ...core.captioning.factory import CaptionerSettings
from ...core.errors import TileScribeError
from ...core.indexing.index_settings import IndexSettings, default_index_path, looks_like_index
from ..indexing import captioner_settings, raster_file
from ..web_render import needs_render, plan_request, render_here
from ..settings import read_settings

INDEX_FILTER = "TileScribe index (*.tilescribe.sqlite)"
MAX_K = 1000  # search.MAX_K: the worker refuses more


def tr(text: str) -> str:
    return QCoreApplication.translate("TileScribe", text)


class _WorkerAlgorithm(QgsProcessingAlgorithm):
    """Shared plumbing: the worker client, progress and cancel, errors as QgsProcessingException."""

    def __init__(self, client: Callable):
        super().__init__()
        self._client = client

    def createInstance(self):
        return type(self)(self._client)

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def _request(self, cmd: str, feedback, **args):
        def on_event(kind: str, data: dict) -> None:
            if kind == "progress" and data.get("total"):
                feedback.setProgress(100.0 * (data.get("finished") or 0) / data["total"])
            elif kind == "status" and data.get("message"):
                feedback.pushInfo(data["message"])
                for warning in data.get("warnings") or ():
                    feedback.reportError(f"warning: {warning}", False)

        try:
            return self._client().request(cmd, on_event=on_event, cancelled=feedback.isCanceled,
                                          **{k: v for k, v in args.items() if v is not None})
        except TileScribeError as exc:
            raise QgsProcessingException(str(exc)) from None


def _raster_path(algorithm, parameters, context) -> str:
    layer = algorithm.parameterAsRasterLayer(parameters, "INPUT", context)
    try:
        return raster_file(layer)
    except TileScribeError as exc:
        raise QgsProcessingException(str(exc)) from None


def _index_output(algorithm, parameters, context, raster: str) -> str:
    path = algorithm.parameterAsFileOutput(parameters, "OUTPUT", context)
    return path or default_index_path(raster)


class IndexLayerAlgorithm(_WorkerAlgorithm):
    def name(self) -> str:
        return "indexlayer"

    def displayName(self) -> str:
        return tr("Index raster layer")

    def shortHelpString(self) -> str:
        return tr("Cuts a raster layer into tiles, captions each tile with a vision-language model and "
                  "stores captions and embeddings in an index file (by default beside the raster). Runs "
                  "again resume where the index stands. The model runs in TileScribe's worker process: "
                  "the model chosen in the Index layer dialog, or the one given here. Run it as a batch "
                  "to index many layers. A web layer (WMS/WMTS/XYZ) or any other layer that is not a "
                  "raster file is first rendered by QGIS into a GeoTIFF over EXTENT at RESOLUTION (map "
                  "units per pixel), saved in RENDER_FOLDER; the basemap's terms of use apply.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", tr("Raster layer")))
        self.addParameter(QgsProcessingParameterBoolean(
            "TEST_MODEL", tr("Test model (meaningless placeholder captions: tests the pipeline)"), False))
        self.addParameter(QgsProcessingParameterFile("MODEL", tr("GGUF model (default: the plugin's settings)"),
                                                     extension="gguf", optional=True))
        self.addParameter(QgsProcessingParameterFile("MMPROJ", tr("GGUF vision projector (mmproj)"),
                                                     extension="gguf", optional=True))
        self.addParameter(QgsProcessingParameterString("SERVER", tr("OpenAI-compatible server URL"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString("SERVER_MODEL", tr("Model name on the server"),
                                                       optional=True))
        for name, label, default, minimum in (("TILE_SIZE", "Tile size (px)", IndexSettings.tile_size, 16),
                                              ("OVERLAP", "Overlap (px)", IndexSettings.overlap, 0),
                                              ("VARIANTS", "Caption variants per tile", IndexSettings.variants, 1)):
            self.addParameter(QgsProcessingParameterNumber(name, tr(label), QgsProcessingParameterNumber.Integer,
                                                           default, minValue=minimum))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", tr("Index file (default: beside the raster)"), INDEX_FILTER, optional=True,
            createByDefault=False))
        # A layer that is not a file (WMS/WMTS/XYZ, ...) is rendered into a GeoTIFF first, as the dialog does.
        self.addParameter(QgsProcessingParameterExtent(
            "EXTENT", tr("Extent to render (web and other non-file layers)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "RESOLUTION", tr("Resolution to render at, map units per pixel (web layers)"),
            QgsProcessingParameterNumber.Double, optional=True, minValue=0.0))
        self.addParameter(QgsProcessingParameterFile(
            "RENDER_FOLDER", tr("Folder for the rendered GeoTIFF (default: the project's folder)"),
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        for name, label in (("RUN_ID", "Run"), ("DONE", "Tiles captioned"), ("FAILED", "Tiles failed")):
            self.addOutput(QgsProcessingOutputNumber(name, tr(label)))

    def _captioner(self, parameters, context) -> CaptionerSettings:
        model = self.parameterAsFile(parameters, "MODEL", context)
        mmproj = self.parameterAsFile(parameters, "MMPROJ", context)
        server = self.parameterAsString(parameters, "SERVER", context).strip()
        if self.parameterAsBoolean(parameters, "TEST_MODEL", context):
            if model or mmproj or server:
                raise QgsProcessingException(tr("Test model and a model or server both name a captioning "
                                                "model: give one of them."))
            return CaptionerSettings(test_model=True)
        if model or mmproj:
            if not (model and mmproj):
                raise QgsProcessingException(tr("Give both the GGUF model and its vision projector (mmproj)."))
            return CaptionerSettings(model=model, mmproj=mmproj)
        if server:
            return CaptionerSettings(server_url=server,
                                     server_model=self.parameterAsString(parameters, "SERVER_MODEL", context))
        try:
            return captioner_settings(read_settings())
        except TileScribeError as exc:
            raise QgsProcessingException(f"{exc} (or set TEST_MODEL, MODEL/MMPROJ or SERVER here)") from None

    def _rendered(self, layer, parameters, context, feedback) -> Optional[str]:
        """A web layer drawn into its GeoTIFF over EXTENT at RESOLUTION (kept: a second run reuses it)."""
        if parameters.get("EXTENT") is None or not parameters.get("RESOLUTION"):
            raise QgsProcessingException(
                f"'{layer.name()}' is not a raster file (provider '{layer.providerType()}'): give EXTENT and "
                "RESOLUTION (map units per pixel) to render it into a GeoTIFF first.")
        extent = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
        folder = self.parameterAsFile(parameters, "RENDER_FOLDER", context) or (
            context.project().absolutePath() if context.project() is not None else "")
        try:
            request = plan_request(layer, extent, self.parameterAsDouble(parameters, "RESOLUTION", context),
                                   folder, self.parameterAsInt(parameters, "TILE_SIZE", context),
                                   self.parameterAsInt(parameters, "OVERLAP", context))
        except TileScribeError as exc:
            raise QgsProcessingException(f"{exc} (RENDER_FOLDER, EXTENT, RESOLUTION)") from None
        tile_size = self.parameterAsInt(parameters, "TILE_SIZE", context)
        feedback.pushInfo(f"{layer.name()}: {request.plan.describe(request.resolution, request.crs, tile_size)}")
        if request.rendered():
            feedback.pushInfo(f"already rendered: {request.path}")
        elif not render_here(request, context, feedback):
            return None
        return request.path

    def processAlgorithm(self, parameters, context, feedback) -> dict:
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if needs_render(layer):
            raster = self._rendered(layer, parameters, context, feedback)
            if raster is None:
                feedback.reportError("cancelled while rendering: nothing was indexed", False)
                return {}
        else:
            raster = _raster_path(self, parameters, context)
        captioner = self._captioner(parameters, context)
        db = _index_output(self, parameters, context, raster)
        feedback.pushInfo(f"indexing {raster} into {db}")
        result = self._request(
            "index", feedback, db=db, raster=raster, captioner=captioner.to_dict(),
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            overlap=self.parameterAsInt(parameters, "OVERLAP", context),
            variants=self.parameterAsInt(parameters, "VARIANTS", context))
        feedback.pushInfo(f"{'stopped' if result.get('cancelled') else 'finished'}: run {result['run_id']}: "
                          f"{result['done']} of {result['total']} tiles captioned ({result['captioned_now']} now), "
                          f"{result['skipped']} skipped, {result['failed']} failed")
        for key, reason in result.get("failures") or ():
            feedback.reportError(f"tile {key} failed: {reason}", False)
        if result.get("cancelled"):
            feedback.reportError("cancelled: run it again to continue where it stopped", False)
        return {"OUTPUT": db, "RUN_ID": result["run_id"], "DONE": result["done"], "FAILED": result["failed"]}


class ImportCaptionsAlgorithm(_WorkerAlgorithm):
    def name(self) -> str:
        return "importcaptions"

    def displayName(self) -> str:
        return tr("Import captions")

    def shortHelpString(self) -> str:
        return tr("Imports captions written elsewhere (a JSON-lines file: one tile's pixel window and "
                  "captions per line, see the CLI's import-captions) for a raster layer into an index, "
                  "embedding them in TileScribe's worker process. Importing the same file again adds "
                  "nothing twice.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", tr("Raster layer the captions describe")))
        self.addParameter(QgsProcessingParameterFile("CAPTIONS", tr("Captions (JSON lines)"),
                                                     fileFilter="JSON lines (*.jsonl *.json *.txt)"))
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", tr("Grid tile size (px; 0: the size of the first window)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber("OVERLAP", tr("Grid overlap (px)"),
                                                       QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", tr("Index file (default: beside the raster)"), INDEX_FILTER, optional=True,
            createByDefault=False))
        for name, label in (("RUN_ID", "Run"), ("IMPORTED", "Tiles imported")):
            self.addOutput(QgsProcessingOutputNumber(name, tr(label)))

    def processAlgorithm(self, parameters, context, feedback) -> dict:
        raster = _raster_path(self, parameters, context)
        db = _index_output(self, parameters, context, raster)
        tile_size = self.parameterAsInt(parameters, "TILE_SIZE", context) or None
        result = self._request("import_captions", feedback, db=db, raster=raster,
                               captions=self.parameterAsFile(parameters, "CAPTIONS", context),
                               tile_size=tile_size, overlap=self.parameterAsInt(parameters, "OVERLAP", context))
        for line_no, reason in result.get("bad_lines") or ():
            feedback.reportError(f"line {line_no}: skipped: {reason}", False)
        feedback.pushInfo(f"imported {result['imported']} tiles into {db} (run {result['run_id']}); "
                          f"{result['already_done']} were already there")
        return {"OUTPUT": db, "RUN_ID": result["run_id"], "IMPORTED": result["imported"]}


FIELDS = (("rank", QVariant.Int), ("score", QVariant.Double), ("caption", QVariant.String),
          ("raster", QVariant.String), ("index", QVariant.String), ("tile_id", QVariant.String),
          ("run_id", QVariant.Int), ("crs", QVariant.String))


class SearchAlgorithm(_WorkerAlgorithm):
    def name(self) -> str:
        return "search"

    def displayName(self) -> str:
        return tr("Search")

    def shortHelpString(self) -> str:
        return tr("Finds the tiles whose captions best match a description, over every raster of the "
                  "given index files (or folders' *.tilescribe.sqlite) in one ranking, and writes them as "
                  "polygons with rank, score, caption, raster and index fields. The indexes must have been "
                  "made with the same embedding model. The optional extent keeps tiles meeting it (in any "
                  "CRS: it is transformed to each raster's). Polygons are in OUTPUT_CRS, else the extent's "
                  "CRS, else the CRS of the best hit's raster.")

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterString("QUERY", tr("What to find (e.g. a bridge over a river)")))
        self.addParameter(QgsProcessingParameterMultipleLayers("INDEX", tr("Index files"), QgsProcessing.TypeFile))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", tr("Only tiles meeting this extent"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber("K", tr("Number of results"),
                                                       QgsProcessingParameterNumber.Integer, 10, minValue=1,
                                                       maxValue=MAX_K))
        self.addParameter(QgsProcessingParameterBoolean(
            "SKIP_OTHER_EMBEDDERS", tr("Leave out indexes made with another embedding model (default: refuse)"),
            False))
        self.addParameter(QgsProcessingParameterCrs("OUTPUT_CRS", tr("CRS of the result polygons"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", tr("TileScribe hits"),
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback) -> dict:
        # Absolute here: the worker refuses relative paths (its working folder is not this one).
        files = [os.path.abspath(f) for f in (self.parameterAsFileList(parameters, "INDEX", context) or []) if f]
        if not files:
            raise QgsProcessingException(tr("Give at least one index file (*.tilescribe.sqlite) or a folder of them."))
        _refuse_an_index_as_output(self.parameterAsOutputLayer(parameters, "OUTPUT", context), files)
        extent, extent_crs = None, None
        if parameters.get("EXTENT") not in (None, ""):
            rect: QgsRectangle = self.parameterAsExtent(parameters, "EXTENT", context)
            extent_crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
            extent = [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]
        feedback.setProgress(5)
        hits = self._request(
            "search", feedback, dbs=files, query=self.parameterAsString(parameters, "QUERY", context),
            k=self.parameterAsInt(parameters, "K", context), extent=extent,
            extent_crs=_crs_text(extent_crs) if extent is not None and extent_crs.isValid() else None,
            other_embedders="skip" if self.parameterAsBoolean(parameters, "SKIP_OTHER_EMBEDDERS", context) else None)
        feedback.setProgress(50)
        out_crs = self.parameterAsCrs(parameters, "OUTPUT_CRS", context)
        if not out_crs.isValid():
            out_crs = extent_crs if extent_crs is not None and extent_crs.isValid() else (
                _hit_crs(hits[0]) if hits else QgsCoordinateReferenceSystem("EPSG:4326"))
        fields = QgsFields()
        for name, kind in FIELDS:
            fields.append(QgsField(name, kind))
        sink, dest = self.parameterAsSink(parameters, "OUTPUT", context, fields, QgsWkbTypes.Polygon, out_crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        transforms: dict = {}
        for number, hit in enumerate(hits, start=1):
            if feedback.isCanceled():
                break
            feature = QgsFeature(fields)
            feature.setGeometry(self._polygon(hit, out_crs, transforms, context))
            feature.setAttributes([hit["rank"], hit["score"], hit["caption"], hit["raster"], hit["index"],
                                   hit["tile_id"], hit["run_id"], hit["crs"]])
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
            feedback.setProgress(50 + 50 * number / len(hits))
        feedback.pushInfo(f"{len(hits)} hits from {len({h['index'] for h in hits})} index file(s)")
        return {"OUTPUT": dest}

    def _polygon(self, hit: dict, out_crs, transforms: dict, context) -> QgsGeometry:
        minx, miny, maxx, maxy = hit["bbox"]
        geometry = QgsGeometry.fromRect(QgsRectangle(minx, miny, maxx, maxy))
        key = (hit["crs"], hit["raster"])
        if key not in transforms:
            source = _hit_crs(hit)
            transforms[key] = (None if not source.isValid() or source == out_crs
                               else QgsCoordinateTransform(source, out_crs, context.transformContext()))
        transform = transforms[key]
        if transform is not None:
            geometry = geometry.densifyByCount(8)  # edges stay true to a curved reprojection
            geometry.transform(transform)
        return geometry


def _refuse_an_index_as_output(destination: str, indexes: list[str]) -> None:
    """The hits' OUTPUT must never be written over an index (its driver would replace the whole file)."""
    path = (destination or "").split("|")[0]
    if path.lower().startswith("ogr:"):
        path = path[4:]
    if not path or path.lower().startswith(("memory:", "postgres", "spatialite:")) or not os.path.exists(path):
        return
    same = any(os.path.exists(f) and os.path.samefile(path, f) for f in indexes)
    if same or looks_like_index(path) or os.path.isdir(path):
        what = "a folder" if os.path.isdir(path) else "a TileScribe index file"
        raise QgsProcessingException(tr(
            f"OUTPUT {path} is {what}: the hits would replace it. Give OUTPUT a new file name "
            "(e.g. hits.gpkg), or leave it empty for a temporary layer."))


def _hit_crs(hit: dict) -> QgsCoordinateReferenceSystem:
    """The CRS of a hit's raster: its label (EPSG:…), else read from the raster file."""
    crs = QgsCoordinateReferenceSystem(hit.get("crs") or "")
    if not crs.isValid() and hit.get("raster") and Path(hit["raster"]).is_file():
        crs = QgsRasterLayer(hit["raster"], "crs", "gdal").crs()
    return crs


def _crs_text(crs: QgsCoordinateReferenceSystem) -> Optional[str]:
    """What the worker (rasterio) reads: EPSG:n when there is one, else WKT."""
    authid = crs.authid()
    return authid if authid.upper().startswith("EPSG:") else crs.toWkt()

