"""One indexer per index file: an advisory lock the OS releases when the process dies."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import IndexingError


class IndexerLock:
    """Held while a process writes captions into an index; a second indexer is refused.

    The lock lives on a side file (`<index>.lock`), never on the database itself:
    closing any descriptor of the database would drop SQLite's own POSIX locks. It sits
    beside the file the path resolves to, so a symlink (or `a/../b`) to the same index
    meets the same lock. The holder's pid stays in it until a clean release: a pid found
    there on acquiring means the last indexer died holding it, or ended in an error
    (`previous_holder_died`).

    A name is not what the file is: through a hard link (another name in another folder)
    two indexers met two side files and both ran, each with its own WAL (issue 22). So the
    lock is also taken on the file's identity (device + inode), in a per-user folder, and a
    file with several hard links is refused with what to do: SQLite keeps its journal beside
    each name, so writing through one name while another is in use can damage it.
    """

    def __init__(self, db_path: str | os.PathLike):
        self.db_path = Path(db_path)
        self.path = Path(f"{Path(db_path).resolve()}.lock")
        self._handle = None
        self._identity_handle = None
        self._marked = False
        self.previous_holder_died = False

    def acquire(self, mark: bool = True) -> "IndexerLock":
        if not self.path.parent.is_dir():
            raise IndexingError(
                f"The folder of the index {self.db_path} does not exist: create it, or give an index "
                "path in a folder that exists."
            )
        try:
            handle = open(self.path, "a+")
        except OSError as exc:
            raise IndexingError(
                f"Cannot create the lock file {self.path} ({exc.strerror}): an index is written in a "
                "folder you can write. Give an index path in such a folder."
            ) from exc
        try:
            _lock(handle)
        except OSError:
            handle.close()
            raise IndexingError(
                f"Another TileScribe indexer is writing {self.db_path} right now. Wait for it to "
                "finish (or stop it), then run again: it will resume where the index stands."
            ) from None
        if not _still_at(handle, self.path):
            # The holder we waited behind removed the file on its clean release: our lock is on a
            # file nobody else will open. Take the one at the path now (a new one if none).
            handle.close()
            return self.acquire(mark)
        self._handle = handle
        try:
            self._lock_identity()
        except BaseException:
            self.release()
            raise
        if mark:
            self._mark(handle)
        return self

    def _lock_identity(self) -> None:
        try:
            st = os.stat(self.db_path)
        except OSError:
            return  # not created yet: nothing else can name it
        folder = _identity_lock_folder()
        try:
            handle = open(folder / f"{st.st_dev}-{st.st_ino}.lock", "a+") if folder else None
        except OSError:
            handle = None
        if handle is None:  # the name lock and the link check still hold
            self._refuse_links(st)
            return
        try:
            _lock(handle)
        except OSError:
            handle.close()
            raise IndexingError(
                f"Another TileScribe indexer is writing {self.db_path} right now (through another name "
                "of the same file). Wait for it to finish (or stop it), then run again: it will resume "
                "where the index stands.") from None
        self._identity_handle = handle
        self._refuse_links(st)

    def _refuse_links(self, st) -> None:
        if st.st_nlink > 1:
            raise IndexingError(
                f"The index {self.db_path} has {st.st_nlink} hard links (other names for the same file, "
                "made by ln or cp -l): SQLite keeps its journal beside each name, so writing through one "
                "name while another is in use can damage the index. Index into a copy of its own "
                f"(cp {self.db_path} NEW.tilescribe.sqlite, then --db NEW.tilescribe.sqlite), or remove "
                f"the other names (find them with: find / -xdev -samefile {self.db_path}).")

    def _mark(self, handle) -> None:
        try:  # the pid also helps a person looking at the file: a full disk must not stop us here
            handle.seek(0)
            self.previous_holder_died = bool(handle.read().strip())
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._marked = True
        except OSError:
            pass

    def release(self, clean: bool = True) -> None:
        """Drop the lock; `clean=False` leaves the pid, so the next indexer checks the index first."""
        if self._identity_handle is not None:
            try:
                self._identity_handle.close()
            except OSError:
                pass
            self._identity_handle = None
        if self._handle is not None:
            if clean and (self._marked or _empty(self._handle)):
                # A clean end leaves no side file: the next indexer finds no pid, and a folder of 50
                # indexes holds no 50 .lock files. Removed while still locked (acquire() checks that
                # the file it locked is the one at the path), never after a crash or an error: the
                # pid left then tells the next indexer to check the index first.
                try:
                    self._handle.truncate(0)
                    self.path.unlink()
                except OSError:
                    pass
                self._marked = False
            try:
                self._handle.close()  # closing drops the lock
            except OSError:
                pass  # flushing the pid failed (disk full): the lock is dropped all the same
            self._handle = None

    def check_free(self) -> None:
        """Raises what acquire() would, keeping nothing: lets a command fail before it loads models."""
        if self.db_path.is_dir():
            return  # not an index file at all: the Store says so, no lock file is left beside it
        self.acquire(mark=False)  # leaves a dead indexer's pid for the real acquire to find
        self.release()

    def __enter__(self) -> "IndexerLock":
        return self.acquire()

    def __exit__(self, exc_type, *exc) -> None:
        self.release(clean=exc_type is None)  # an error, a second Ctrl-C: not a clean end


def _still_at(handle, path: Path) -> bool:
    """Whether the open lock file is still the file at `path` (not removed or replaced meanwhile)."""
    try:
        opened, there = os.fstat(handle.fileno()), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (there.st_dev, there.st_ino)


def _empty(handle) -> bool:
    try:
        return os.fstat(handle.fileno()).st_size == 0
    except OSError:
        return False


def _identity_lock_folder():
    """A folder only this user writes, for locks named by device + inode (None: none can be made)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folder = Path(base) / "tilescribe" / "index-locks"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
            return None  # planted by someone else: do not lock through it
    except OSError:
        return None
    return folder


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
