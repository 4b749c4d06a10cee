"""TileScribe QGIS plugin: find places in rasters by describing them."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin.qgis.plugin import TileScribePlugin

    return TileScribePlugin(iface)
