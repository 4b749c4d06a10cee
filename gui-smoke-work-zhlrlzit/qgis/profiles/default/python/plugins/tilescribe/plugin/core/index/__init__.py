"""The index file: `store.Store` owns it and runs every query; schema, SQL, locks and health checks live here."""

# Light on purpose: the QGIS side reads the suffix (through index_settings) without numpy or sqlite-vec.
INDEX_SUFFIX = ".tilescribe.sqlite"

# "TSCR" in the SQLite header's application id (connection.APPLICATION_ID): a TileScribe index.
_HEADER, _APPLICATION_ID = b"SQLite format 3\x00", b"TSCR"


def looks_like_index(path) -> bool:
    """Whether the file at `path` is a TileScribe index (by its SQLite header: 100 bytes read, nothing opened).

    For code that must never write over one (a Processing output), not a check that it is whole.
    """
    import os

    try:
        with open(path, "rb") as file:
            if not os.path.isfile(path):
                return False
            header = file.read(72)
    except OSError:
        return False
    return header.startswith(_HEADER) and header[68:72] == _APPLICATION_ID
