"""The TileScribe Processing provider: Index raster layer, Search, Import captions (batch, Modeler, qgis_process)."""
