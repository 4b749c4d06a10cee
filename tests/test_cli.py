"""The command line: outputs parse, bad input gives one clear message and exit 2, no traceback."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from helpers import in_process_cli
from tilescribe.plugin.core.index.migrations import SCHEMA_VERSION

CAPTIONS = [
    {"window": [0, 0, 128, 128], "captions": ["a harbour with many boats", "boats at a pier"]},
    {"window": [128, 0, 128, 128], "captions": ["a dense green forest", "trees"]},
    {"window": [256, 0, 44, 128], "captions": ["a baseball diamond", "a sports field"]},
]


@pytest.fixture
def cli(monkeypatch, minilm, capsys):
    """Run `tilescribe ARGS` in-process with the real embedder loaded once for the session."""
    return in_process_cli(monkeypatch, capsys, minilm)


@pytest.fixture
def db(tmp_path, rgb_raster, cli):
    captions = tmp_path / "c.jsonl"
    captions.write_text("".join(json.dumps(c) + "\n" for c in CAPTIONS))
    db = tmp_path / "cli.tilescribe.sqlite"
    code, _, err = cli("import-captions", "--raster", rgb_raster, "--captions", captions, "--db", db)
    assert code == 0, err
    assert "imported 3 tiles" in err
    return db


def test_search_json_lists_ranked_tiles_with_their_geometry(cli, db):
    code, out, _ = cli("search", "--db", db, "boats in a harbour", "-k", "2", "--format", "json")
    hits = json.loads(out)
    assert code == 0 and [h["rank"] for h in hits] == [1, 2]
    assert set(hits[0]) >= {"rank", "tile_id", "score", "window", "bbox", "crs", "caption"}
    assert hits[0]["window"] == [0, 0, 128, 128] and hits[0]["crs"] == "EPSG:32618"
    assert hits[0]["bbox"] == [500000.0, 4198720.0, 501280.0, 4200000.0]


def test_search_geojson_is_tile_polygons_in_the_raster_crs(cli, db, tmp_path):
    out_file = tmp_path / "hits.geojson"
    code, _, err = cli("search", "--db", db, "a sports field", "--format", "geojson", "-o", out_file)
    collection = json.loads(out_file.read_text())
    assert code == 0 and "wrote 3 results" in err
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32618"
    first = collection["features"][0]
    assert first["properties"]["rank"] == 1 and first["properties"]["tile_id"] == "256_0_44x128"
    assert first["geometry"]["coordinates"][0][0] == [502560.0, 4198720.0]


def test_info_counts_tiles_variants_and_vectors(cli, db):
    code, out, _ = cli("info", "--db", db, "--format", "json")
    run = json.loads(out)["runs"][0]
    assert code == 0
    assert run["tiles"]["done"] == 3 and run["variants_stored"] == 6 == run["vectors"]
    code, out, _ = cli("info", "--db", db)
    assert "3 done" in out and "EPSG:32618" in out


def _newer_schema(path):
    from tilescribe.plugin.core.index.store import Store

    Store(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 5}")
    conn.close()


def _other_program(path):
    conn = sqlite3.connect(path)
    conn.execute("create table t (x)")
    conn.close()


@pytest.mark.parametrize("make_db, message", [
    (lambda p: None, "Index file not found"),
    (lambda p: p.write_text("hello"), "not a TileScribe index"),
    (_other_program, "another program"),
    (_newer_schema, "newer TileScribe"),
])
def test_bad_index_files_exit_2_with_one_message(cli, tmp_path, make_db, message):
    path = tmp_path / "x.tilescribe.sqlite"
    make_db(path)
    code, out, err = cli("search", "--db", path, "a farm")
    assert code == 2 and message in err and str(path) in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("argv, message", [
    (["search", "--db", "{db}", ""], "query is empty"),
    (["search", "--db", "{db}", "farm", "-k", "0"], "at least 1"),
    (["import-captions", "--raster", "{tmp}/missing.tif", "--captions", "{tmp}/c.jsonl", "--db", "{db}"],
     "Raster not found"),
    (["import-captions", "--raster", "{tmp}/c.jsonl", "--captions", "{tmp}/c.jsonl", "--db", "{db}"],
     "Cannot read"),
])
def test_bad_input_exits_2_with_one_message(cli, db, tmp_path, argv, message):
    code, _, err = cli(*[a.format(db=db, tmp=tmp_path) for a in argv])
    assert code == 2 and message in err and "Traceback" not in err


def test_installed_command_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tilescribe.plugin.cli", "search", "--db", str(tmp_path / "no.sqlite"), "farm"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tilescribe: error: Index file not found")
    assert "Traceback" not in proc.stderr
