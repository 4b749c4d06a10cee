"""Issue 22: `search -o` never overwrites the index it reads, whatever name reaches it."""

from __future__ import annotations

import os

import pytest

from helpers import build_index, in_process_cli
from rasters import write_raster


@pytest.fixture
def setup(tmp_path, monkeypatch, capsys, hashing_embedder):
    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    db = tmp_path / "r.tilescribe.sqlite"
    store, _ = build_index(db, raster, hashing_embedder, [["a harbour"], ["a forest"]])
    store.close()
    return db, in_process_cli(monkeypatch, capsys, hashing_embedder)


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "dotted path", "wal file"])
def test_search_output_that_is_the_index_itself_is_refused(setup, tmp_path, how):
    db, cli = setup
    before = db.read_bytes()
    if how == "same path":
        output = db
    elif how == "symlink":
        output = tmp_path / "link.json"
        output.symlink_to(db)
    elif how == "hard link":
        output = tmp_path / "hard.json"
        os.link(db, output)
    elif how == "dotted path":
        (tmp_path / "sub").mkdir()
        output = tmp_path / "sub" / ".." / db.name
    else:
        output = db.with_name(db.name + "-wal")
    code, out, err = cli("search", "harbour", "--db", db, "-o", output)
    assert code == 2, err
    assert "Traceback" not in err
    assert f"--output {output} is the index file {db}" in err or f"--output {output} is a file of the index" in err
    assert "Give another file name for the results." in err
    assert db.read_bytes() == before


def test_search_output_beside_the_index_still_works(setup, tmp_path):
    db, cli = setup
    code, out, err = cli("search", "harbour", "--db", db, "-o", tmp_path / "hits.json", "--format", "json")
    assert code == 0, err and (tmp_path / "hits.json").read_text().startswith("[")
