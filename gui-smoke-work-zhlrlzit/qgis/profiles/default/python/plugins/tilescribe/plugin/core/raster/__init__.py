"""Rasters: the tile grid, pixel reads and the RGB render a vision model sees."""
