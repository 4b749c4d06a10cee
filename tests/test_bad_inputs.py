"""The bad-inputs catalogue (docs/BAD_INPUTS.md), row by row, through the real command line.

Every row runs `tilescribe ...` in-process (cli.main.main, as tests/test_cli.py does) and
asserts what the user sees: the exit code, one `tilescribe: error:` line naming the input
and what to do, no traceback, and that an index which was already there lost nothing.
The hashing embedder stands in for all-MiniLM-L6-v2 (seconds to load); raster rows use
the fake captioner (the model is not what they are about); model rows use the real
llama.cpp path with the tiny test models.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from fixtures_server import Reply
from gguf import GGUFWriter
from rasterio.transform import Affine

from fakes import FakeCaptioner, HashingEmbedder
from helpers import in_process_cli
from index_checks import index_state
from rasters import write_raster
from tilescribe.plugin.cli import index_command
from tilescribe.plugin.core.indexing import indexer
from tilescribe.plugin.core.captioning import tiny_gguf
from tilescribe.plugin.core.index.migrations import SCHEMA_VERSION
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.raster.tiling import TileGrid, open_raster, read_info

CAPTIONS = [
    {"window": [0, 0, 128, 128], "captions": ["a harbour with many boats", "boats at a pier"]},
    {"window": [128, 0, 128, 128], "captions": ["a dense green forest", "trees"]},
    {"window": [256, 0, 44, 128], "captions": ["a baseball diamond", "a sports field"]},
]


# --- the harness ----------------------------------------------------------------------------------

class Ctx:
    """What a row builds its input from: a temp folder, and an index that already holds captions."""

    def __init__(self, tmp: Path, request, cli):
        self.tmp, self.request, self._cli = tmp, request, cli
        self._indexed: Path | None = None

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)

    def raster(self, name: str = "r.tif", **kwargs) -> Path:
        kwargs.setdefault("width", 128)
        kwargs.setdefault("height", 128)
        return write_raster(self.tmp / name, **kwargs)

    @property
    def rgb(self) -> Path:
        path = self.tmp / "rgb.tif"
        return path if path.exists() else self.raster("rgb.tif", width=300, height=200)

    @property
    def indexed(self) -> Path:
        """An index of `rgb` with three captioned tiles (imported); rows check it loses nothing."""
        if self._indexed is None:
            captions = self.tmp / "captions.jsonl"
            captions.write_text("".join(json.dumps(c) + "\n" for c in CAPTIONS))
            self._indexed = self.tmp / "indexed.tilescribe.sqlite"
            code, _, err = self._cli("import-captions", "--raster", self.rgb, "--captions", captions,
                                     "--db", self._indexed)
            assert code == 0, err
        return self._indexed

    def index_argv(self, raster, *extra, db=None, tile_size=64) -> list:
        return ["index", raster, "--db", db or self.tmp / "x.tilescribe.sqlite", "--tile-size", tile_size,
                "--variants", 2, *extra]


@dataclass
class Row:
    """One catalogue row: argv built from a Ctx, the exit code, and what the output must say."""

    id: str
    argv: Callable[[Ctx], list]
    code: int
    says: tuple[str, ...] = ()
    fake_captioner: bool = False
    check: Callable[[Ctx, str, str], None] | None = None
    marks: tuple = field(default=())

    def param(self):
        return pytest.param(self, id=self.id, marks=self.marks)


@pytest.fixture
def cli(monkeypatch, capsys):
    return in_process_cli(monkeypatch, capsys, HashingEmbedder())


@pytest.fixture
def ctx(tmp_path, request, cli):
    return Ctx(tmp_path, request, cli)


def _snapshot(db: Path) -> tuple:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return (conn.execute("select * from captions order by id").fetchall(),
                conn.execute("select * from tiles where status = 'done' order by id").fetchall())
    finally:
        conn.close()


def _assert_kept(before: tuple, db: Path) -> None:
    after = _snapshot(db)
    assert set(before[0]) <= set(after[0]) and set(before[1]) <= set(after[1]), "indexed work was lost"
    with Store(db, readonly=True) as store:
        assert store._conn.execute("pragma integrity_check").fetchone() == ("ok",)


def run_row(row: Row, ctx: Ctx, cli, monkeypatch) -> tuple[str, str]:
    if row.fake_captioner:
        monkeypatch.setattr(index_command, "make_captioner", lambda settings: FakeCaptioner())
    argv = row.argv(ctx)
    before = _snapshot(ctx.indexed) if ctx._indexed else None
    code, out, err = cli(*argv)
    assert code == row.code, err
    assert "Traceback" not in err and "ERROR 1:" not in err  # nor GDAL's own error printing
    for text in row.says:
        assert text.format(tmp=ctx.tmp) in err + out, err
    if code == 2:
        assert err.count("tilescribe: error:") == 1 and out == ""
    if before is not None:
        _assert_kept(before, ctx.indexed)
    if row.check:
        row.check(ctx, out, err)
    return out, err


# --- rasters --------------------------------------------------------------------------------------

def _truncated(ctx: Ctx) -> Path:
    full = ctx.raster("full.tif", width=512, height=256)
    cut = ctx.tmp / "truncated.tif"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    return cut


def _rotated(ctx: Ctx) -> Path:
    return ctx.raster("rotated.tif", transform=Affine(10, 2, 500000, 3, -10, 4200000))


def _float_nan(ctx: Ctx) -> Path:
    data = np.random.default_rng(3).random((1, 128, 128)).astype("float32")
    data[:, :, 64:] = np.nan
    return ctx.raster("float.tif", data=data)


def _first_tile_done_rest_pending(ctx: Ctx, out: str, err: str) -> None:
    statuses = [t[0] for t in index_state(ctx.tmp / "x.tilescribe.sqlite", 2).values()]
    assert statuses.count("done") >= 8 and statuses.count("pending") >= 1  # read before the cut: kept


def _default_db_beside_the_raster(ctx: Ctx, out: str, err: str) -> None:
    db = ctx.tmp / "dossier é" / "ma carte 1.tilescribe.sqlite"
    assert [t[0] for t in index_state(db, 2).values()] == ["done"] * 4


RASTER_ROWS = [
    Row("raster-missing", lambda c: c.index_argv(c.tmp / "nope.tif"), 2,
        ("Raster not found: {tmp}/nope.tif", "Check the path"), fake_captioner=True),
    Row("raster-zero-size", lambda c: c.index_argv(_write(c.tmp / "empty.tif", b"")),
        2, ("Raster {tmp}/empty.tif is empty (0 bytes)",), fake_captioner=True),
    Row("raster-not-a-raster", lambda c: c.index_argv(_write(c.tmp / "notes.tif", b"hello")),
        2, ("Cannot read {tmp}/notes.tif as a raster",), fake_captioner=True),
    Row("raster-folder", lambda c: c.index_argv(c.tmp), 2, ("{tmp} is a folder, not a raster file",),
        fake_captioner=True),
    Row("raster-truncated-mid-data", lambda c: c.index_argv(_truncated(c)), 2,
        ("Cannot read pixels", "{tmp}/truncated.tif", "truncated or corrupt"), fake_captioner=True,
        check=_first_tile_done_rest_pending),
    Row("raster-1x1", lambda c: c.index_argv(c.raster("one.tif", width=1, height=1)), 0,
        ("0 of 1 tiles captioned", "1 skipped", "note: no tile of {tmp}/one.tif has content"),
        fake_captioner=True),
    Row("raster-no-crs", lambda c: c.index_argv(c.raster("nocrs.tif", crs=None)), 0,
        ("warning: {tmp}/nocrs.tif has no CRS: tiles are located in pixel coordinates", "4 of 4 tiles"),
        fake_captioner=True),
    Row("raster-rotated-transform", lambda c: c.index_argv(_rotated(c)), 0,
        ("warning: rotated or sheared transform", "4 of 4 tiles"), fake_captioner=True),
    Row("raster-16-bit", lambda c: c.index_argv(c.raster("u16.tif", bands=1, dtype="uint16")), 0,
        ("4 of 4 tiles captioned",), fake_captioner=True),
    Row("raster-float-with-nan", lambda c: c.index_argv(_float_nan(c)), 0,
        ("2 of 4 tiles captioned", "2 skipped"), fake_captioner=True),
    Row("raster-single-band", lambda c: c.index_argv(c.raster("grey.tif", bands=1)), 0,
        ("4 of 4 tiles captioned",), fake_captioner=True),
    Row("raster-five-bands", lambda c: c.index_argv(c.raster("five.tif", bands=5)), 0,
        ("4 of 4 tiles captioned",), fake_captioner=True),
    Row("raster-all-nodata", lambda c: c.index_argv(
        c.raster("nodata.tif", nodata=0, data=np.zeros((3, 128, 128), "uint8"))), 0,
        ("0 of 4 tiles captioned", "4 skipped", "note: no tile of {tmp}/nodata.tif has content",
         "nodata value"), fake_captioner=True),
    Row("raster-path-with-spaces-and-non-ascii", lambda c: [
        "index", write_raster(_mkdir(c.tmp / "dossier é") / "ma carte 1.tif", width=128, height=128),
        "--tile-size", 64, "--variants", 2], 0, ("4 of 4 tiles captioned",), fake_captioner=True,
        check=_default_db_beside_the_raster),
    Row("raster-bands-that-do-not-exist", lambda c: c.index_argv(c.raster(), "--bands", 5), 2,
        ("Band setting [5] does not fit a raster with 3 bands",), fake_captioner=True),
    Row("raster-tile-size-too-small", lambda c: ["index", c.raster(), "--db", c.tmp / "x.tilescribe.sqlite",
                                                 "--tile-size", 8], 2,
        ("Tile size 8 px is too small: use 16 px or more",), fake_captioner=True),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- models ---------------------------------------------------------------------------------------

def _model_argv(ctx: Ctx, model, mmproj, *extra) -> list:
    return ctx.index_argv(ctx.rgb, "--model", model, "--mmproj", mmproj, *extra, db=ctx.indexed, tile_size=128)


def _tiny(ctx: Ctx) -> tuple[Path, Path]:
    return ctx.fixture("tiny_pair")


def _truncated_model(ctx: Ctx) -> Path:
    model = _tiny(ctx)[0]
    cut = ctx.tmp / "cut-model.gguf"
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    return cut


def _unknown_architecture(ctx: Ctx) -> Path:
    path = ctx.tmp / "gpt-zz.gguf"
    writer = GGUFWriter(path, "gpt-zz")
    writer.add_uint32("gpt-zz.embedding_length", 64)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _with_chat_template(ctx: Ctx, name: str, template: str) -> Path:
    def fill(writer):
        tiny_gguf._fill_text_model(writer)
        writer.add_chat_template(template)
    return tiny_gguf._write_if_changed(ctx.tmp / name, "llama", fill)


MODEL_ROWS = [
    Row("model-missing", lambda c: _model_argv(c, c.tmp / "nope.gguf", _tiny(c)[1]), 2,
        ("The model file does not exist: {tmp}/nope.gguf", "Check the path")),
    Row("mmproj-missing", lambda c: _model_argv(c, _tiny(c)[0], c.tmp / "nope-mmproj.gguf"), 2,
        ("The mmproj file does not exist: {tmp}/nope-mmproj.gguf",)),
    Row("model-without-mmproj", lambda c: c.index_argv(c.rgb, "--model", _tiny(c)[0], db=c.indexed), 2,
        ("No captioning model set", "--mmproj")),
    Row("model-truncated", lambda c: _model_argv(c, _truncated_model(c), _tiny(c)[1]), 2,
        ("The model file {tmp}/cut-model.gguf is truncated", "Download it again")),
    Row("model-not-gguf", lambda c: _model_argv(c, _write(c.tmp / "m.safetensors", b'{"__metadata__": {}}'),
                                                _tiny(c)[1]), 2,
        ("{tmp}/m.safetensors is not a GGUF file",)),
    Row("model-unknown-architecture", lambda c: _model_argv(c, _unknown_architecture(c), _tiny(c)[1]), 2,
        ("cannot load the model file {tmp}/gpt-zz.gguf",)),
    Row("text-only-model-as-mmproj", lambda c: _model_argv(c, _tiny(c)[0], _tiny(c)[0]), 2,
        ("is a 'llama' model, not a vision projector", "cannot caption images")),
    Row("projector-as-model", lambda c: _model_argv(c, _tiny(c)[1], _tiny(c)[1]), 2,
        ("tiny-llava-mmproj.gguf is a vision projector (mmproj), not a language model",)),
    Row("mmproj-of-another-model", lambda c: _model_argv(c, c.fixture("smollm2_path"),
                                                         c.fixture("mismatched_mmproj")), 2,
        ("does not match the model", "size 64, the model expects 576", "Use the mmproj released with")),
    Row("unknown-chat-family", lambda c: _model_argv(c, *_tiny(c), "--family", "llava-9"), 2,
        ("Unknown model family 'llava-9'",)),
    Row("chat-template-with-a-syntax-error",
        lambda c: _model_argv(c, _with_chat_template(c, "broken-template.gguf", "{% if %}"), _tiny(c)[1]), 2,
        ("{tmp}/broken-template.gguf", "chat template")),
]


# --- captioning servers ---------------------------------------------------------------------------

def _completion(n: int) -> dict:
    variants = [{"one_sentence": f"fields {i}", "feature": f"a road {i}", "caption": f"green fields {i}"}
                for i in range(n)]
    return {"choices": [{"message": {"role": "assistant", "content": json.dumps({"variants": variants})}}],
            "usage": {"completion_tokens": 10}}


def _server_argv(ctx: Ctx, url: str, *extra) -> list:
    return ctx.index_argv(ctx.rgb, "--server", url, "--server-model", "tiny-vlm", *extra, db=ctx.indexed,
                          tile_size=128)


def _scripted(ctx: Ctx, *replies: Reply) -> str:
    server = ctx.fixture("scripted_server")
    server.script = list(replies)
    return server.url


SERVER_ROWS = [
    Row("server-down", lambda c: _server_argv(c, f"http://127.0.0.1:{c.fixture('closed_port')}/v1"), 2,
        ("Cannot connect to the captioning server at http://127.0.0.1:", "Is the server running?")),
    Row("server-answers-a-web-page", lambda c: _server_argv(c, _scripted(
        c, Reply(200, "<html><title>Login</title></html>", {"Content-Type": "text/html"}))), 2,
        ("answered with a web page", "Check the URL")),
    Row("server-answers-malformed-json", lambda c: _server_argv(c, _scripted(c, Reply(200, '{"choices": [')),
                                                                "--parallel", 1), 1,
        ("0 of 6 tiles captioned", "6 failed", "the server's answer is not JSON")),
    Row("server-401", lambda c: _server_argv(c, _scripted(c, Reply(401, {"error": {"message": "bad key"}}))), 2,
        ("refused the request (HTTP 401", "API key")),
    Row("server-404-model", lambda c: _server_argv(c, _scripted(c, Reply(404, {"error": "no such model"}))), 2,
        ("answered 404", "'tiny-vlm' is not served there")),
    Row("server-url-not-http", lambda c: _server_argv(c, "ftp://example.org/v1"), 2,
        ("'ftp://example.org/v1' is not an http(s) URL",)),
    Row("server-without-model-name", lambda c: c.index_argv(c.rgb, "--server", "http://127.0.0.1:9/v1",
                                                            db=c.indexed), 2,
        ("Give the model name to ask http://127.0.0.1:9/v1 for (--server-model)",)),
    Row("server-works", lambda c: _server_argv(c, _scripted(c, Reply(200, _completion(2)))), 0,
        ("6 of 6 tiles captioned",)),
]


# --- index files ----------------------------------------------------------------------------------

def _not_sqlite(ctx: Ctx) -> Path:
    path = ctx.tmp / "notes.tilescribe.sqlite"
    path.write_text("my notes")
    return path


def _other_program(ctx: Ctx) -> Path:
    path = ctx.tmp / "customers.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("create table customers (id integer, name text)")
    conn.commit()
    conn.close()
    return path


def _newer_schema(ctx: Ctx) -> Path:
    path = ctx.tmp / "newer.tilescribe.sqlite"
    Store(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    return path


def _damaged(ctx: Ctx, first_page: int, name: str) -> Path:
    """A copy of the index with its pages from `first_page` on zeroed (a bad disk sector, a torn copy)."""
    data = bytearray(ctx.indexed.read_bytes())
    for offset in range(first_page * 4096, len(data), 4096):
        data[offset:offset + 4096] = bytes(4096)
    damaged = ctx.tmp / name
    damaged.write_bytes(bytes(data))
    return damaged


def _damaged_vectors(ctx: Ctx) -> Path:
    """A copy whose sqlite-vec chunk is cut short: the file opens, the vectors cannot be read."""
    damaged = _damaged(ctx, 10_000, "d2.tilescribe.sqlite")  # a plain copy
    conn = sqlite3.connect(damaged)
    conn.execute("update caption_vec_1_vector_chunks00 set vectors = zeroblob(100)")
    conn.commit()
    conn.close()
    return damaged


INDEX_FILE_MAKERS = {
    "not-sqlite": (_not_sqlite, "is not a TileScribe index (not an SQLite file)"),
    "another-programs-sqlite": (_other_program, "is an SQLite file of another program"),
    "newer-schema": (_newer_schema, "was written by a newer TileScribe"),
}
def _on_bad_file(make, command: str):
    def argv(ctx: Ctx) -> list:
        path = make(ctx)
        return {"search": ["search", "--db", path, "a farm"], "info": ["info", "--db", path],
                "index": ["index", ctx.rgb, "--db", path, "--tile-size", 128]}[command]
    return argv


INDEX_FILE_ROWS = [
    Row(f"index-file-{name}-{command}", _on_bad_file(make, command), 2, (says,), fake_captioner=True)
    for name, (make, says) in INDEX_FILE_MAKERS.items() for command in ("search", "info", "index")
] + [
    Row("index-file-missing", lambda c: ["search", "--db", c.tmp / "nope.tilescribe.sqlite", "a farm"], 2,
        ("Index file not found: {tmp}/nope.tilescribe.sqlite", "tilescribe index")),
    Row("index-file-is-a-folder", lambda c: ["search", "--db", c.tmp, "a farm"], 2,
        ("{tmp} is a folder; give an index file",)),
    Row("index-file-damaged-pages", lambda c: ["search", "--db", _damaged(c, 1, "d1.tilescribe.sqlite"), "boats"],
        2, ("Index {tmp}/d1.tilescribe.sqlite cannot be used (database disk image is malformed)",
            "restore a copy")),
    Row("index-file-damaged-vectors", lambda c: ["search", "--db", _damaged_vectors(c), "boats"],
        2, ("Index {tmp}/d2.tilescribe.sqlite cannot be read", "it is damaged", "restore a copy")),
    Row("index-file-folder-does-not-exist", lambda c: c.index_argv(c.rgb, db=c.tmp / "no" / "x.tilescribe.sqlite"),
        2, ("The folder of the index {tmp}/no/x.tilescribe.sqlite does not exist",), fake_captioner=True),
]


# --- queries --------------------------------------------------------------------------------------

RANKED = "  1  0."  # the first line of a ranked list: rank, score, tile


def _search(*argv):
    return lambda c: ["search", "--db", c.indexed, *argv]


QUERY_ROWS = [
    Row("query-empty", _search(""), 2, ("The query is empty",)),
    Row("query-blank", _search("  \t "), 2, ("The query is empty",)),
    Row("query-only-control-characters", _search("\x07\x1b\x7f"), 2, ("The query is empty",)),
    Row("query-100k-characters", _search("harbour " * 12_500), 2,
        ("The query is 99999 characters long; keep it under 2000",)),
    Row("query-with-control-characters", _search("boats\x07 in a \x1b[31mharbour"), 0, (RANKED,)),
    Row("query-fts-quote", _search('a "quoted', "--lexical"), 0, (RANKED,)),
    Row("query-fts-star", _search("harbour*", "--lexical"), 0, (RANKED,)),
    Row("query-fts-near", _search("NEAR(boats harbour", "--lexical"), 0, (RANKED,)),
    Row("query-fts-operators", _search("boats AND NOT -forest ^ caption:x", "--lexical"), 0, (RANKED,)),
    Row("query-sql-like", _search("'); drop table tiles; --", "--lexical"), 0, (RANKED,)),
    Row("query-non-ascii", _search("ünïcödé straße 港口", "--lexical"), 0, (RANKED,)),
    Row("query-k-zero", _search("boats", "-k", 0), 2, ("at least 1",)),
    Row("query-k-too-large", _search("boats", "-k", 5000), 2, ("k = 5000 is too many results",)),
    Row("query-extent-inverted", _search("boats", "--extent", 10, 10, 0, 0), 2, ("--extent must be",)),
    Row("query-unknown-run", _search("boats", "--run", 99), 2, ("has no run 99",)),
    Row("query-output-folder-missing", _search("boats", "-o", "/nonexistent-folder/hits.json"), 2,
        ("Cannot write the results to /nonexistent-folder/hits.json",)),
]


ALL_ROWS = RASTER_ROWS + MODEL_ROWS + SERVER_ROWS + INDEX_FILE_ROWS + QUERY_ROWS


@pytest.mark.parametrize("row", [row.param() for row in ALL_ROWS])
def test_bad_input(row, ctx, cli, monkeypatch):
    run_row(row, ctx, cli, monkeypatch)


def test_query_rows_leave_every_table_intact(ctx, cli):
    before = _snapshot(ctx.indexed)
    for query in ("'); drop table tiles; --", "NEAR(boats", "\"", "*"):
        assert cli("search", "--db", ctx.indexed, query)[0] == 0
    assert _snapshot(ctx.indexed) == before


# --- rows that need more than one command ---------------------------------------------------------

def test_index_files_refused_are_left_byte_for_byte(ctx, cli, monkeypatch):
    monkeypatch.setattr(index_command, "make_captioner", lambda settings: FakeCaptioner())
    for make, _ in INDEX_FILE_MAKERS.values():
        path = make(ctx)
        data = path.read_bytes()
        for argv in (["search", "--db", path, "a"], ["info", "--db", path],
                     ["index", ctx.rgb, "--db", path, "--tile-size", 128]):
            assert cli(*argv)[0] == 2
        assert path.read_bytes() == data


def test_index_path_with_url_characters_is_the_file_written(ctx, cli, monkeypatch):
    """`#`, `?` and `%` are ordinary in file names; in the SQLite URI they must be escaped."""
    monkeypatch.setattr(index_command, "make_captioner", lambda settings: FakeCaptioner())
    db = ctx.tmp / "run #2 100%41?.tilescribe.sqlite"
    code, _, err = cli(*ctx.index_argv(ctx.rgb, db=db))
    assert code == 0 and db.is_file() and not (ctx.tmp / "run ").exists(), err
    assert [t[0] for t in index_state(db, 2).values()].count("done") == 5 * 4  # 300x200 px at 64 px


@pytest.mark.slow  # waits out SQLite's 5 s busy timeout
def test_index_locked_by_another_program_says_so_and_keeps_the_work(ctx, cli, monkeypatch):
    monkeypatch.setattr(index_command, "make_captioner", lambda settings: FakeCaptioner())
    db = ctx.indexed
    before = _snapshot(db)
    holder = subprocess.Popen(  # another program holding a write transaction (a DB browser, say)
        [sys.executable, "-c", f"import sqlite3, time; c = sqlite3.connect({str(db)!r}, isolation_level=None); "
         "c.execute('begin immediate'); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, out, err = cli("search", "--db", db, "boats")  # readers are not blocked (WAL)
        assert code == 0 and "0_0_128x128" in out
        code, _, err = cli(*ctx.index_argv(ctx.rgb, db=db))
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and "Traceback" not in err
    assert f"Another program is writing to the index {db}" in err and "Close it there" in err
    _assert_kept(before, db)


@pytest.fixture
def readonly_folder(tmp_path):
    """A folder that cannot be written: a read-only bind mount as root, chmod otherwise."""
    source, view = tmp_path / "source", tmp_path / "readonly"
    source.mkdir()
    view.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(view)], capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot make a read-only folder as root here: {done.stderr.decode().strip()}")
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True)
        yield source, view
        subprocess.run(["umount", str(view)], capture_output=True)
    else:
        yield source, source
        _chmod_tree(source, 0o755, 0o644)


def _chmod_tree(folder: Path, dirs: int, files: int) -> None:
    for path in folder.iterdir():
        path.chmod(files)
    folder.chmod(dirs)


def _readonly_index(ctx: Ctx, folder) -> Path:
    source, view = folder
    for path in (ctx.indexed, ctx.rgb):
        (source / path.name).write_bytes(path.read_bytes())
    if source == view:
        _chmod_tree(source, 0o555, 0o444)
    return view / ctx.indexed.name


def test_read_only_index_cannot_be_indexed_into_and_says_why(ctx, cli, monkeypatch, readonly_folder):
    monkeypatch.setattr(index_command, "make_captioner", lambda settings: FakeCaptioner())
    db = _readonly_index(ctx, readonly_folder)
    data = db.read_bytes()
    code, _, err = cli(*ctx.index_argv(ctx.rgb, db=db))
    assert code == 2 and "Traceback" not in err and str(db) in err
    assert "writ" in err  # "folder you can write" / "cannot be written"
    assert db.read_bytes() == data


def test_read_only_index_can_still_be_searched(ctx, cli, readonly_folder):
    db = _readonly_index(ctx, readonly_folder)
    code, out, err = cli("search", "--db", db, "boats")
    assert "Traceback" not in err
    assert code == 0 and out.splitlines()[0].endswith("boats at a pier")


# --- huge rasters ---------------------------------------------------------------------------------

def _huge_vrt(tmp: Path, side: int = 1_000_000) -> Path:
    """A VRT claiming side x side px, backed by one 256 px GeoTIFF in its corner (the rest nodata)."""
    write_raster(tmp / "src.tif", width=256, height=256)
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><NoDataValue>0</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">src.tif</SourceFilename><SourceBand>{b}</SourceBand>'
        '<SrcRect xOff="0" yOff="0" xSize="256" ySize="256"/><DstRect xOff="0" yOff="0" xSize="256" ySize="256"/>'
        "</SimpleSource></VRTRasterBand>" for b in (1, 2, 3))
    path = tmp / "huge.vrt"
    path.write_text(f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}"><SRS>EPSG:32618</SRS>'
                    f"<GeoTransform>500000, 1, 0, 4200000, 0, -1</GeoTransform>{bands}</VRTDataset>")
    return path


def _run_for_grid(store: Store, path: Path, tile_size: int):
    with open_raster(path) as ds:
        info = read_info(ds)
    grid = TileGrid(info.width, info.height, tile_size)
    run_id = store.create_run(store.upsert_raster(info), store.embedder_id("hashing-test", 64), {}, "p",
                              tile_size, 0, 2)
    return info, grid, run_id


def test_huge_raster_grid_is_registered_in_batches_with_flat_memory(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(indexer, "REGISTER_BATCH", 1000)
    with Store(tmp_path / "h.tilescribe.sqlite", create=True) as store:
        info, grid, run_id = _run_for_grid(store, _huge_vrt(tmp_path), 4096)  # the largest tile size
        batches = []
        add_tiles = store.add_tiles
        monkeypatch.setattr(store, "add_tiles", lambda run, tiles: batches.append(len(tiles)) or add_tiles(run, tiles))
        tracemalloc.start()
        try:
            indexer.register_grid(store, run_id, info, grid)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            first = next(indexer.tiles_to_do(store, run_id, ("pending",)))
            todo_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(grid) == 245 * 245 and sum(store.tile_counts(run_id).values()) == len(grid)
    assert max(batches) == 1000 and sum(batches) == len(grid)
    assert peak < 4 << 20, f"registering {len(grid)} tiles peaked at {peak / 1e6:.1f} MB"
    assert todo_peak < 2 << 20 and first.window.as_list() == [0, 0, 4096, 4096]


def test_registration_killed_half_way_is_completed_next_run(tmp_path, monkeypatch):
    monkeypatch.setattr(indexer, "REGISTER_BATCH", 1000)
    with Store(tmp_path / "h.tilescribe.sqlite", create=True) as store:
        info, grid, run_id = _run_for_grid(store, _huge_vrt(tmp_path, 200_000), 4096)  # 49 x 49 tiles
        calls = []
        add_tiles = store.add_tiles

        def dies_after_two(run, tiles):
            if len(calls) == 2:
                raise KeyboardInterrupt  # the process is stopped between two batches
            calls.append(len(tiles))
            add_tiles(run, tiles)

        monkeypatch.setattr(store, "add_tiles", dies_after_two)
        with pytest.raises(KeyboardInterrupt):
            indexer.register_grid(store, run_id, info, grid)
        assert sum(store.tile_counts(run_id).values()) == 2000
        monkeypatch.setattr(store, "add_tiles", add_tiles)
        indexer.register_grid(store, run_id, info, grid)
        keys = [row[0] for row in store._conn.execute("select tile_key from tiles where run_id = ?", (run_id,))]
    assert len(keys) == len(set(keys)) == len(grid) == 49 * 49


@pytest.mark.slow  # registers a grid of a million tiles: ~5 s
def test_huge_raster_through_the_command_line(tmp_path, cli, monkeypatch):
    """1,000,000 x 1,000,000 px in 4096 px tiles: 60,025 tiles registered, the first captioned, then Ctrl-C."""
    monkeypatch.setattr(index_command, "make_captioner", lambda settings: FakeCaptioner())

    class CtrlCAfterFirstTile(index_command.ProgressBar):
        def __call__(self, p):
            super().__call__(p)
            if p.done:
                raise KeyboardInterrupt

    monkeypatch.setattr(index_command, "ProgressBar", CtrlCAfterFirstTile)
    db = tmp_path / "huge.tilescribe.sqlite"
    code, _, err = cli("index", _huge_vrt(tmp_path), "--db", db, "--tile-size", 4096)
    assert code == 130 and "work committed so far is kept" in err and "Traceback" not in err
    statuses = [t[0] for t in index_state(db, 5).values()]
    assert len(statuses) == 245 * 245 and statuses.count("done") == 1
