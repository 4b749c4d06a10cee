"""Reading the index: float vectors by caption id, straight from the sqlite-vec table's chunks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from .errors import IndexFileError
from .store_writes import ids_param

# A chunk holding at least this many of the wanted vectors is read whole (one 1.5 MB
# blob); fewer are read one by one through blob I/O, which with the memory-mapped file
# costs ~7 us a vector (bench-search's re-scoring: ~2 vectors per chunk).
WHOLE_CHUNK_MIN = 48


class VectorReader:
    """The one float copy of each vector lives in a vec0 table; this reads it by caption id.

    vec0 stores vectors in chunks of 1,024 (`<table>_vector_chunks00.vectors`) and maps
    each rowid (= caption id) to (chunk_id, chunk_offset) in `<table>_rowids`. vec0's
    own point query reads a whole chunk per vector (~70 us); reading the offsets here
    costs about what a primary-key read of a plain table did.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, table: str, dim: int):
        self.conn, self.path, self.table, self.dim = conn, path, table, dim
        self.stride = 4 * dim
        self._blob_io = hasattr(conn, "blobopen")  # Python 3.11+

    def read(self, caption_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, ascending; their float32 vectors) for these caption ids."""
        ids, chunks, offsets = self._locate(np.asarray(caption_ids, dtype=np.int64))
        vectors = np.empty((len(ids), self.dim), dtype=np.float32)
        order = np.lexsort((offsets, chunks))
        bounds = np.flatnonzero(np.diff(chunks[order])) + 1
        for group in np.split(order, bounds) if len(order) else ():
            vectors[group] = self._chunk_vectors(int(chunks[group[0]]), offsets[group])
        return ids, vectors

    def _locate(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rowid, chunk id, offset) of the wanted ids that exist, by rowid ascending."""
        if not len(wanted):
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        low, high = int(wanted.min()), int(wanted.max())
        if len(wanted) * 4 >= high - low:  # dense (a whole run): one range scan, then keep the wanted
            cursor = self.conn.execute(f"select rowid, chunk_id, chunk_offset from {self.table}_rowids"
                                       " where rowid between ? and ? order by rowid", (low, high))
        else:
            cursor = self.conn.execute(f"select rowid, chunk_id, chunk_offset from {self.table}_rowids"
                                       " where rowid in (select value from json_each(?)) order by rowid",
                                       (ids_param(wanted),))
        rows = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, 3)
        rows = rows[np.isin(rows[:, 0], wanted)]
        return rows[:, 0], rows[:, 1], rows[:, 2]

    def _chunk_vectors(self, chunk_id: int, offsets: np.ndarray) -> np.ndarray:
        if len(offsets) >= WHOLE_CHUNK_MIN or not self._blob_io:
            row = self.conn.execute(f"select vectors from {self.table}_vector_chunks00 where rowid = ?",
                                    (chunk_id,)).fetchone()
            data = row[0] if row else b""
            self._check(chunk_id, offsets, len(data))
            whole = np.frombuffer(data, dtype=np.float32).reshape(-1, self.dim)
            return whole[offsets]
        try:
            blob = self.conn.blobopen(f"{self.table}_vector_chunks00", "vectors", chunk_id, readonly=True)
        except sqlite3.OperationalError:  # no such chunk row
            self._check(chunk_id, offsets, 0)
        with blob:
            self._check(chunk_id, offsets, len(blob))
            parts = []
            for offset in offsets:
                blob.seek(int(offset) * self.stride)
                parts.append(blob.read(self.stride))
        return np.frombuffer(b"".join(parts), dtype=np.float32).reshape(-1, self.dim)

    def _check(self, chunk_id: int, offsets: np.ndarray, size: int) -> None:
        if not size or size % self.stride or (len(offsets) and (int(offsets.max()) + 1) * self.stride > size):
            raise IndexFileError(
                f"Index {self.path} cannot be read (vector chunk {chunk_id} of {self.table} holds "
                f"{size} bytes, not whole {self.dim}-d vectors): it is damaged. Index the raster again "
                "into a new file (--db), or restore a copy."
            )
