"""Issue 22: escape sequences stored in an index never reach the terminal raw."""

from __future__ import annotations

import json
import sqlite3

import pytest

from helpers import build_index, in_process_cli
from rasters import write_raster

ESC = "\x1b]0;owned\x07\x1b[2J\x1b[31m"
C1 = "\x9b31m"            # the one-byte CSI some terminals obey
BIDI = "\u202egnp.exe"    # right-to-left override
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def _no_raw(text: str) -> bool:
    return not any(ch in text for ch in RAW)


@pytest.fixture
def hostile(tmp_path, hashing_embedder, monkeypatch, capsys):
    folder = tmp_path / f"d{ESC}"
    folder.mkdir()
    raster = write_raster(folder / f"r{C1}.tif", width=128, height=64)
    db = tmp_path / "r.tilescribe.sqlite"
    store, _ = build_index(db, raster, hashing_embedder, [[f"harbour {ESC} boats {C1}"], [f"forest {BIDI}"]])
    store.close()
    return db, raster, in_process_cli(monkeypatch, capsys, hashing_embedder)


def test_info_shows_a_hostile_raster_path_escaped(hostile):
    db, raster, cli = hostile
    code, out, err = cli("info", "--db", db)
    assert code == 0 and _no_raw(out) and _no_raw(err)
    assert "\\x1b]0;owned\\x07" in out and "\\x9b31m" in out  # visible, not obeyed
    code, out, err = cli("info", "--db", db, "--format", "json")
    assert code == 0 and _no_raw(out)
    assert json.loads(out)["rasters"][0]["path"] == str(raster)  # the data itself is unchanged


@pytest.mark.parametrize("fmt", ["text", "json", "geojson"])
def test_search_output_and_exports_never_carry_raw_escapes(hostile, tmp_path, fmt):
    db, raster, cli = hostile
    code, out, err = cli("search", "harbour", "--db", db, "--format", fmt)
    assert code == 0, err
    assert _no_raw(out) and _no_raw(err)
    exported = tmp_path / f"hits.{fmt}"
    code, _, err = cli("search", "harbour", "--db", db, "--format", fmt, "-o", exported)
    text = exported.read_text(encoding="utf-8")
    assert code == 0 and _no_raw(text)
    if fmt == "json":  # escaped as JSON escapes: a program reading it gets the stored text back
        assert {hit["caption"] for hit in json.loads(text)} == {f"harbour {ESC} boats {C1}", f"forest {BIDI}"}


def test_error_messages_naming_a_hostile_path_are_escaped(tmp_path, hashing_embedder, monkeypatch, capsys):
    cli = in_process_cli(monkeypatch, capsys, hashing_embedder)
    code, out, err = cli("search", "x", "--db", tmp_path / f"none{ESC}.tilescribe.sqlite")
    assert code == 2 and _no_raw(err) and "\\x1b" in err


def test_import_captions_cleans_escapes_as_model_answers_are_cleaned(tmp_path, hashing_embedder, monkeypatch,
                                                                     capsys):
    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    captions = tmp_path / "c.jsonl"
    captions.write_text(json.dumps({"window": [0, 0, 64, 64], "captions": [f"a {ESC}harbour {C1}{BIDI}"]}) + "\n",
                        encoding="utf-8")
    db = tmp_path / "i.tilescribe.sqlite"
    cli = in_process_cli(monkeypatch, capsys, hashing_embedder)
    code, out, err = cli("import-captions", "--raster", raster, "--captions", captions, "--db", db)
    assert code == 0, err
    with sqlite3.connect(db) as conn:
        stored = [row[0] for row in conn.execute("select caption from captions")]
    conn.close()
    assert stored and all(_no_raw(text) for text in stored)
