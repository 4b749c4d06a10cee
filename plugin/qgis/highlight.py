"""The results layer (tile polygons in the raster's CRS, labelled by rank) and map navigation to hits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional, Sequence

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsDataProvider,
    QgsFeature,
    QgsField,
    QgsFillSymbol,
    QgsGeometry,
    QgsPalLayerSettings,
    QgsProject,
    QgsProperty,
    QgsRectangle,
    QgsSymbolLayer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QTimer, QVariant
from qgis.PyQt.QtGui import QColor, QFont

from ..core.errors import TileScribeError
from .results import Hit

LAYER_NAME = "TileScribe results"
KEPT_FILE = "tilescribe_kept.gpkg"  # beside the project: the results the user keeps, one table each
RESULTS_PROPERTY = "tilescribe/results"  # marks the layers the dock shows its results in
# Rank 1 is the most opaque; later ranks fade, so the best tiles stand out on the map.
HitCrs = Callable[[Hit], QgsCoordinateReferenceSystem]  # the CRS a hit's box is in
FILL_COLOUR = 'color_rgba(255, 110, 0, max(20, 100 - 10 * ("rank" - 1)))'


class ResultsLayer:
    """One memory layer owned by the project, replaced on each search, removed on clear/unload.

    A scratch layer of ours: QGIS must not ask to save it on quit, nor mark the project modified.
    """

    def __init__(self, project: Optional[QgsProject] = None, canvas=None):
        self.project = project or QgsProject.instance()
        self.canvas = canvas
        self._layer_id: Optional[str] = None
        self.last_id: Optional[str] = None  # also after removal: the project's signals name it then
        # Not saved with the project: a memory layer reopens empty, and the next search would add
        # a second one. Results are a view of the dock; Export keeps them.
        self.project.writeProject.connect(self._leave_out_of)
        self.project.readProject.connect(self._after_reading)

    def unload(self) -> None:
        self.project.writeProject.disconnect(self._leave_out_of)
        self.project.readProject.disconnect(self._after_reading)

    def _after_reading(self, _document=None) -> None:
        # Not while QGIS is still reading: a layer removed from inside readProject stays in the
        # project's snapping settings as a freed pointer, and the next save crashed QGIS (seen in
        # the real QGIS: Project > Open, then Save: QgsSnappingConfig::writeProject, SIGSEGV).
        QTimer.singleShot(0, self._drop_saved_results)

    def forget(self) -> None:
        """The project was cleared: its layers, ours included, are gone already."""
        self._layer_id = None

    def _leave_out_of(self, document) -> None:
        """Takes our layer out of the project file being written (layers, layer tree, legend, order).
        QGIS 3.22 emits writeProject before it writes the layers: there this finds nothing, the file
        keeps an empty results layer, and _drop_saved_results removes it once the project is read."""
        layer = self.layer()
        if layer is not None:
            leave_out_layer(document, layer.id())

    def _drop_saved_results(self, _document=None) -> None:
        """A project saved before results were left out of it: its empty results layers go."""
        stale = [layer.id() for layer in self.project.mapLayers().values()
                 if layer.id() != self._layer_id and is_results_layer(layer)]
        if stale:
            was_dirty = self.project.isDirty()
            self.project.removeMapLayers(stale)
            self._keep_dirty(was_dirty)

    def layer(self) -> Optional[QgsVectorLayer]:
        return self.project.mapLayer(self._layer_id) if self._layer_id else None

    def show(self, title: str, hits: Sequence[Hit], crs: QgsCoordinateReferenceSystem,
             crs_of: Optional[HitCrs] = None) -> QgsVectorLayer:
        """The hits on the map: the layer already shown gets the new features (no layer-tree churn,
        the canvas redraws only it), else a new layer goes on top of the Layers panel.

        `crs` is the layer's; `crs_of(hit)` the CRS of a hit's box when hits come from rasters in
        several CRSs (those boxes are reprojected into `crs`)."""
        layer, was_dirty = self.layer(), self.project.isDirty()
        if layer is not None and layer.crs() == crs:
            layer.setName(layer_title(title))
            layer.dataProvider().truncate()
            layer.dataProvider().addFeatures(hit_features(layer, hits, crs_of))
            layer.updateExtents()
            layer.triggerRepaint()
            self._keep_dirty(was_dirty)
            return layer
        self._remove()
        layer = results_layer(title, hits, crs, crs_of)
        self.last_id = layer.id()
        self.project.addMapLayer(layer, False)
        self.project.layerTreeRoot().insertLayer(0, layer)  # on top of the raster it marks
        self._layer_id = layer.id()
        self._keep_dirty(was_dirty)
        return layer

    def clear(self) -> None:
        was_dirty = self.project.isDirty()
        if self._remove() and self.canvas is not None:
            # The canvas keeps its last picture until it redraws: without this the outlines and
            # rank labels stay painted after the layer is gone.
            self.canvas.refreshAllLayers()
        self._keep_dirty(was_dirty)

    def _keep_dirty(self, was_dirty: bool) -> None:
        """The project's modified flag as before: the layer tree marks it one event-loop turn later."""
        if not was_dirty:
            QTimer.singleShot(0, lambda: self.project.setDirty(False))

    def _remove(self) -> bool:
        layer = self.layer()
        self._layer_id = None
        if layer is None:
            return False
        self.project.removeMapLayer(layer.id())
        return True


def is_results_layer(layer) -> bool:
    return (layer.customProperty(RESULTS_PROPERTY) is not None
            or (layer.name().startswith(LAYER_NAME) and layer.providerType() == "memory"))


def leave_out_layer(document, layer_id: str) -> None:
    """Removes every element of a project document that names `layer_id`: its <maplayer> (whose
    <id> child holds it) and the layer tree, legend and order entries (an id/layerid attribute)."""
    doomed = []
    elements = document.elementsByTagName("*")
    for i in range(elements.count()):
        element = elements.item(i).toElement()
        if element.tagName() == "maplayer":
            if element.firstChildElement("id").text() == layer_id:
                doomed.append(element)
        elif layer_id in (element.attribute("id"), element.attribute("layerid"), element.attribute("layer")):
            doomed.append(element)
    for element in doomed:
        parent = element.parentNode()
        if not parent.isNull():
            parent.removeChild(element)


def layer_title(title: str) -> str:
    return f"{LAYER_NAME}: {title}"[:80]


def hit_features(layer: QgsVectorLayer, hits: Sequence[Hit], crs_of: Optional[HitCrs] = None) -> list[QgsFeature]:
    features = []
    for hit in hits:
        feature = QgsFeature(layer.fields())
        feature.setAttributes([hit.rank, round(hit.score, 4), hit.caption, hit.tile_id, hit.tile_db_id,
                               hit.raster, hit.index])
        feature.setGeometry(tile_geometry(hit.rectangle(), crs_of(hit) if crs_of else layer.crs(), layer.crs()))
        features.append(feature)
    return features


def tile_geometry(rect: QgsRectangle, source: QgsCoordinateReferenceSystem,
                  target: QgsCoordinateReferenceSystem) -> QgsGeometry:
    """A tile's box as a polygon in `target`: reprojected with densified edges (they may curve),
    unchanged when either CRS is unknown (pixel coordinates) or both are the same."""
    geometry = QgsGeometry.fromRect(rect)
    if not (source.isValid() and target.isValid()) or source == target:
        return geometry
    geometry = geometry.densifyByCount(8)
    try:
        geometry.transform(QgsCoordinateTransform(source, target, QgsProject.instance()))
    except QgsCsException:
        return QgsGeometry.fromRect(rect)
    return geometry


def results_layer(title: str, hits: Sequence[Hit], crs: QgsCoordinateReferenceSystem,
                  crs_of: Optional[HitCrs] = None) -> QgsVectorLayer:
    """The hits as a styled memory layer in `crs` (not added to any project)."""
    layer = _memory_layer(crs, layer_title(title))
    layer.dataProvider().addFeatures(hit_features(layer, hits, crs_of))
    layer.updateExtents()
    _style(layer)
    layer.setCustomProperty(RESULTS_PROPERTY, 1)
    layer.setCustomProperty("skipMemoryLayersCheck", 1)  # QGIS asks to save scratch layers on quit
    return layer


def _memory_layer(crs: QgsCoordinateReferenceSystem, name: str) -> QgsVectorLayer:
    layer = QgsVectorLayer("Polygon", name, "memory")
    layer.setCrs(crs)
    layer.dataProvider().addAttributes([
        QgsField("rank", QVariant.Int), QgsField("score", QVariant.Double), QgsField("caption", QVariant.String),
        QgsField("tile_id", QVariant.String), QgsField("tile_db_id", QVariant.Int),
        QgsField("raster", QVariant.String), QgsField("index", QVariant.String),
    ])
    layer.updateFields()
    return layer


def _style(layer: QgsVectorLayer) -> None:
    symbol = QgsFillSymbol.createSimple({"color": "255,110,0,90", "outline_color": "255,70,0,255",
                                         "outline_width": "0.6", "outline_width_unit": "MM"})
    symbol.symbolLayer(0).setDataDefinedProperty(QgsSymbolLayer.PropertyFillColor,
                                                 QgsProperty.fromExpression(FILL_COLOUR))
    layer.renderer().setSymbol(symbol)
    text = QgsTextFormat()
    text.setFont(QFont("Sans", 11, QFont.Bold))
    text.setSize(11)
    text.setColor(QColor("black"))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setColor(QColor("white"))
    buffer.setSize(1.2)
    text.setBuffer(buffer)
    labels = QgsPalLayerSettings()
    labels.fieldName = "rank"
    labels.placement = QgsPalLayerSettings.OverPoint
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def keep_results(project: QgsProject, title: str, hits: Sequence[Hit], crs: QgsCoordinateReferenceSystem,
                 crs_of: Optional[HitCrs] = None) -> QgsVectorLayer:
    """The hits as a layer of the project that the dock never touches again (Clear, new searches).

    A project with a file: one more table of KEPT_FILE beside it, added as a GeoPackage layer (saved
    with the project like any other). A project without a file yet: a memory layer, which QGIS offers
    to make permanent (a memory layer reopens empty, so it must not pass for a kept one)."""
    name = kept_title(title)
    memory = results_layer(title, hits, crs, crs_of)
    memory.removeCustomProperty(RESULTS_PROPERTY)  # not the dock's scratch layer: never dropped, nor skipped
    memory.removeCustomProperty("skipMemoryLayersCheck")
    memory.setName(name)
    layer = memory
    if project.absolutePath():
        path = Path(project.absolutePath()) / KEPT_FILE
        table = _free_table_name(path, title)
        _write_gpkg(memory, str(path), table, append=path.exists())
        layer = QgsVectorLayer(f"{path}|layername={table}", name, "ogr")
        if not layer.isValid():
            raise TileScribeError(f"Could not read back the layer {table} of {path}: check that the folder "
                                  "is writable and the file is not open elsewhere.")
        _style(layer)
    project.addMapLayer(layer, False)
    project.layerTreeRoot().insertLayer(0, layer)
    return layer


def kept_title(title: str) -> str:
    return f"TileScribe: {title}"[:80]


def _free_table_name(path: Path, title: str) -> str:
    """A GeoPackage table name from the query, not yet in the file (a_dirt_road, a_dirt_road_2, …)."""
    base = re.sub(r"[^0-9a-z]+", "_", title.lower()).strip("_")[:40] or "results"
    taken = set()
    if path.exists():
        probe = QgsVectorLayer(str(path), "probe", "ogr")
        taken = {entry.split(QgsDataProvider.SUBLAYER_SEPARATOR)[1].lower()
                 for entry in (probe.dataProvider().subLayers() if probe.isValid() else [])}
    name, number = base, 1
    while name.lower() in taken:
        number += 1
        name = f"{base}_{number}"
    return name


def to_map(rect: QgsRectangle, crs: QgsCoordinateReferenceSystem, canvas) -> QgsRectangle:
    """A rectangle in the raster's CRS as the canvas shows it."""
    target = canvas.mapSettings().destinationCrs()
    if not (crs.isValid() and target.isValid()) or crs == target:
        return QgsRectangle(rect)
    try:
        return QgsCoordinateTransform(crs, target, QgsProject.instance()).transformBoundingBox(rect)
    except QgsCsException:
        return QgsRectangle(rect)


def zoom_to(canvas, rects: Sequence[QgsRectangle], crs, margin: float = 1.15) -> None:
    """Show every rectangle; `crs` is theirs, or a list of each one's CRS (rasters in several CRSs)."""
    if not rects:
        return
    crss = list(crs) if isinstance(crs, (list, tuple)) else [crs] * len(rects)
    extent = to_map(rects[0], crss[0], canvas)
    for rect, rect_crs in zip(rects[1:], crss[1:]):
        extent.combineExtentWith(to_map(rect, rect_crs, canvas))
    extent.scale(margin)
    canvas.setExtent(extent)
    canvas.refresh()


def flash(canvas, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
    canvas.flashGeometries([QgsGeometry.fromRect(to_map(rect, crs, canvas))], canvas.mapSettings().destinationCrs())


def export_geopackage(layer: QgsVectorLayer, path: str) -> None:
    """Write the results layer to a GeoPackage (one layer named tilescribe_results)."""
    _write_gpkg(layer, path, "tilescribe_results")


def _write_gpkg(layer: QgsVectorLayer, path: str, table: str, append: bool = False) -> None:
    """`layer` as the table `table` of the GeoPackage `path` (a new file, or one more table of it)."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = table
    if append:
        options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteLayer
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, QgsProject.instance().transformContext(),
                                                       options)
    if result[0] != QgsVectorFileWriter.NoError:
        raise TileScribeError(f"Could not write {path}: {result[1]}. Pick a folder you can write to.")
