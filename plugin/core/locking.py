"""One indexer per index file: an advisory lock the OS releases when the process dies."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import IndexingError


class IndexerLock:
    """Held while a process writes captions into an index; a second indexer is refused.

    The lock lives on a side file (`<index>.lock`), never on the database itself:
    closing any descriptor of the database would drop SQLite's own POSIX locks.
    """

    def __init__(self, db_path: str | os.PathLike):
        self.path = Path(f"{db_path}.lock")
        self._handle = None

    def acquire(self) -> "IndexerLock":
        handle = open(self.path, "a+")
        try:
            _lock(handle)
        except OSError:
            handle.close()
            raise IndexingError(
                f"Another TileScribe indexer is writing {str(self.path)[:-5]} right now. Wait for it to "
                "finish (or stop it), then run again: it will resume where the index stands."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the lock
            self._handle = None

    def __enter__(self) -> "IndexerLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
