"""A download owns its partial files: one download per model folder, and no link is ever followed.

Two `models download` of one model both appended to the same `.part` file (huggingface_hub
writes 10 MB chunks, so a small partial stayed at 0 bytes and the second "resumed" from 0):
the installed file was twice its size. A `.part` entry planted as a symlink got the model's
bytes appended to the link's target. So: an exclusive lock per model folder, held for the
whole download, and partial files opened with O_NOFOLLOW, never through a link (issue 22).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

from ..errors import ModelError

LOCK_NAME = ".download.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def partial_dir(folder: Path, name: str) -> Path:
    """folder/<name>, a real folder: a link planted in its place is removed, not followed."""
    path = folder / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def download_lock(folder: Path, repo: str) -> Iterator[None]:
    """Held while a download writes into `folder`; a second download of it is refused at once.

    The lock file stays (empty): removing it would let a third download lock a new file while
    a second still holds the removed one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    try:
        try:
            _lock(fd)
        except OSError:
            raise ModelError(
                f"Another download of {repo} into {folder} is running (another `tilescribe models download` "
                "or the QGIS model picker): wait for it to finish, then run this again: it will find the "
                "files in place and fetch nothing.") from None
        yield
    finally:
        os.close(fd)  # closing drops the lock


def partial_size(part: Path) -> int:
    """Bytes already in a partial file; a link or anything but a regular file is removed (0)."""
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        part.unlink()
        return 0
    return st.st_size


def open_partial(part: Path):
    """The partial file for appending, never through a symlink (ELOOP: a planted link is removed)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW
    try:
        fd = os.open(part, flags, 0o644)
    except OSError:
        if not part.is_symlink():
            raise
        part.unlink()  # planted since partial_size looked: removed, and a new file made
        fd = os.open(part, flags | os.O_EXCL, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ModelError(f"{part} is not a regular file: delete it, then download again.")
    return os.fdopen(fd, "ab")


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
