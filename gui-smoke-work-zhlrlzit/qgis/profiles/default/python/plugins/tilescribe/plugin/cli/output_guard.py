"""An output file must never be an input index: `search --db X -o X` replaced the index with its results.

Compared by what the files are (device + inode, through symlinks and hard links) and, for a
file not made yet, by the resolved name, which also covers SQLite's companion files
(`-wal`, `-shm`, `-journal`): writing those would damage the index as surely.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import TileScribeError

COMPANIONS = ("-wal", "-shm", "-journal")


def refuse_output_over_index(output, index, option: str = "--output") -> None:
    """Raise a TileScribeError when writing `output` would overwrite the index file `index`."""
    if not output or not index:
        return
    out, db = Path(output), Path(index)
    same = False
    try:
        same = os.path.samefile(out, db)
    except OSError:
        pass  # one of them does not exist (yet)
    if same or _resolved(out) == _resolved(db):
        raise TileScribeError(f"{option} {output} is the index file {index}: writing the results there would "
                              "replace the index. Give another file name for the results.")
    for suffix in COMPANIONS:
        companion = Path(f"{_resolved(db)}{suffix}")
        try:
            hit = os.path.samefile(out, companion)
        except OSError:
            hit = _resolved(out) == companion
        if hit:
            raise TileScribeError(f"{option} {output} is a file of the index {index} (its SQLite {suffix[1:]} "
                                  "file): writing the results there would damage the index. Give another file "
                                  "name for the results.")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compared by name only
        return Path(os.path.abspath(path))
