"""The model worker: a JSON-lines server process, its protocol, and the stdlib-only client QGIS uses."""
