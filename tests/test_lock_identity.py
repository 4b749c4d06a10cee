"""Issue 22: the indexer lock is on what the index file is (device + inode), not on its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tilescribe.plugin.core.errors import IndexingError
from tilescribe.plugin.core.index.locking import IndexerLock
from tilescribe.plugin.core.index.store import Store

HARNESS = Path(__file__).with_name("cli_harness.py")


@pytest.fixture
def index(tmp_path) -> Path:
    path = tmp_path / "a" / "r.tilescribe.sqlite"
    path.parent.mkdir()
    with Store(path, create=True):
        pass
    return path


def test_a_second_indexer_through_a_hard_link_made_while_the_first_runs_is_refused(index, tmp_path):
    other = tmp_path / "b" / "other-name.sqlite"
    other.parent.mkdir()
    with IndexerLock(index):
        os.link(index, other)  # made after the first indexer took its lock
        with pytest.raises(IndexingError, match="Another TileScribe indexer is writing"):
            IndexerLock(other).acquire()
    os.unlink(other)
    with IndexerLock(other.parent.parent / "a" / index.name):  # free again once released
        pass


def test_a_file_with_several_hard_links_is_refused_with_what_to_do(index, tmp_path):
    other = tmp_path / "other-name.sqlite"
    os.link(index, other)
    with pytest.raises(IndexingError) as refused:
        IndexerLock(other).acquire()
    message = str(refused.value)
    assert f"The index {other} has 2 hard links" in message
    assert "cp " in message and "find " in message and "-samefile" in message
    with pytest.raises(IndexingError, match="has 2 hard links"):
        IndexerLock(index).check_free()


def test_index_through_a_hard_link_exits_2_naming_the_links(index, tmp_path):
    from rasters import write_raster

    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    other = tmp_path / "other-name.sqlite"
    os.link(index, other)
    done = subprocess.run([sys.executable, str(HARNESS), "index", str(raster), "--db", str(other), "--test-model",
                           "--tile-size", "64", "--variants", "2"], capture_output=True, text=True, timeout=300,
                          cwd=HARNESS.parent)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "has 2 hard links" in done.stderr
