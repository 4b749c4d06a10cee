"""Small pictures of result tiles, rendered by the raster layer's own renderer (its styling)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import QgsMapLayerType, QgsProject, QgsProviderRegistry, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QImage, QPainter, QPixmap

THUMBNAIL_PX = 72


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def raster_layer_for(path: str, project: Optional[QgsProject] = None) -> Optional[QgsRasterLayer]:
    """The project's raster layer showing the file `path`, if one does."""
    if not path:
        return None
    project = project or QgsProject.instance()
    for layer in project.mapLayers().values():
        if layer.type() != QgsMapLayerType.RasterLayer or layer.providerType() != "gdal":
            continue
        source = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or ""
        if source and _same_file(source, path):
            return layer
    return None


def tile_thumbnail(layer: Optional[QgsRasterLayer], rect: QgsRectangle, size: int = THUMBNAIL_PX) -> Optional[QPixmap]:
    """The tile as the layer draws it, centred on a square (thin edge tiles keep the rows aligned).

    GDAL reads overviews, so this stays fast on big rasters."""
    if layer is None or layer.renderer() is None or rect.isEmpty():
        return None
    aspect = rect.width() / rect.height()
    width, height = (size, max(1, round(size / aspect))) if aspect >= 1 else (max(1, round(size * aspect)), size)
    block = layer.renderer().block(1, rect, width, height)
    if block is None or not block.isValid():
        return None
    image = block.image()
    if image.isNull():
        return None
    square = QImage(size, size, QImage.Format_ARGB32_Premultiplied)
    square.fill(Qt.transparent)
    painter = QPainter(square)
    painter.drawImage((size - image.width()) // 2, (size - image.height()) // 2, image)
    painter.end()
    return QPixmap.fromImage(square)
