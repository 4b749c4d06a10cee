"""The QGIS side of TileScribe: actions, dock, tasks, highlight layer; models stay in the worker."""
