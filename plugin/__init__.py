"""TileScribe plugin package: `core` (no QGIS), `cli`, and the QGIS side."""
