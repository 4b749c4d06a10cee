"""TileScribe plugin package: `core` (no QGIS), `worker`, `cli`, `bootstrap`, and the QGIS side (`qgis`)."""
