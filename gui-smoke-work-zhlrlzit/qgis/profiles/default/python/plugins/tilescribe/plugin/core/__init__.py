"""TileScribe core: tiling, captioning, embedding, index store and search, free of QGIS."""
