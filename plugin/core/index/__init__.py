"""The index file: `store.Store` owns it and runs every query; schema, SQL, locks and health checks live here."""

# Light on purpose: the QGIS side reads the suffix (through index_settings) without numpy or sqlite-vec.
INDEX_SUFFIX = ".tilescribe.sqlite"
