"""The index file: one object owns it; schema, reads, writes, locks and health checks live here."""

# Light on purpose: the QGIS side reads the suffix (through index_settings) without numpy or sqlite-vec.
INDEX_SUFFIX = ".tilescribe.sqlite"
