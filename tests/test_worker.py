"""The worker process over real pipes: replies by id, errors as messages, survives bad requests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.raster.tiling import Tile, TileGrid, open_raster, read_info


class WorkerProcess:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tilescribe.plugin.worker.server"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert json.loads(self.proc.stdout.readline())["event"] == "ready"

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        while True:
            message = json.loads(self.proc.stdout.readline())
            if message.get("id") == request.get("id") and "event" not in message:
                return message

    def close(self):
        self.proc.stdin.close()
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def worker():
    process = WorkerProcess()
    yield process
    process.proc.kill()
    process.proc.wait()


@pytest.fixture(scope="module")
def db(tmp_path_factory, minilm):
    from rasters import write_raster

    tmp = tmp_path_factory.mktemp("worker")
    raster = write_raster(tmp / "r.tif", width=200, height=100)
    path = tmp / "r.tilescribe.sqlite"
    with Store(path, create=True) as store, open_raster(raster) as ds:
        info = read_info(ds)
        run_id = store.create_run(store.upsert_raster(info), store.embedder_id(minilm.name, minilm.dim),
                                  {"backend": "test"}, "test", 100, 0, 2)
        store.add_tiles(run_id, [Tile(w, info.bbox(w)) for w in TileGrid(200, 100, 100).windows()])
        for tile, texts in zip(store.tiles(run_id), [["a harbour", "boats"], ["a forest", "trees"]]):
            variants = [CaptionVariant.plain(t) for t in texts]
            store.save_captions(tile.id, variants, minilm.embed(texts))
    return str(path)


def test_hello_reports_the_environment(worker):
    reply = worker.ask({"id": 1, "cmd": "hello"})
    assert reply["ok"] and reply["result"]["modules"]["sqlite_vec"] and reply["result"]["protocol"] == 1


def test_search_similar_tile_at_and_captions(worker, db):
    hits = worker.ask({"id": 2, "cmd": "search", "db": db, "query": "ships in a port", "k": 2})["result"]
    assert [h["tile_id"] for h in hits] == ["0_0_100x100", "100_0_100x100"]
    similar = worker.ask({"id": 3, "cmd": "similar", "db": db, "tile_db_id": hits[0]["tile_db_id"]})["result"]
    assert [h["tile_id"] for h in similar] == ["100_0_100x100"]
    x = hits[1]["bbox"][0] + 1
    tile = worker.ask({"id": 4, "cmd": "tile_at", "db": db, "x": x, "y": hits[1]["bbox"][1] + 1})["result"]
    assert tile["tile_id"] == "100_0_100x100" and tile["captions"][0]["caption"] == "a forest"
    assert worker.ask({"id": 5, "cmd": "tile_at", "db": db, "x": -1e9, "y": 0})["result"] is None


@pytest.mark.parametrize("request_, error_type, message", [
    ({"cmd": "search", "db": "/nonexistent/x.tilescribe.sqlite", "query": "a"}, "IndexFileError", "not found"),
    ({"cmd": "search", "db": "{db}", "query": ""}, "QueryError", "empty"),
    ({"cmd": "frobnicate"}, "ProtocolError", "unknown command"),
    ({"cmd": "captions"}, "ProtocolError", "captions: field 'db' is missing"),
    ({"cmd": "search", "db": "{db}", "query": "boats", "kk": 3}, "ProtocolError", "search: unknown field 'kk'"),
    # Issue 14 review: `runs` had no field checks (KeyError('db') as an InternalError).
    ({"cmd": "runs"}, "ProtocolError", "runs: field 'db' is missing"),
    ({"cmd": "runs", "db": 5}, "ProtocolError", "runs: field 'db' must be text"),
    ({"cmd": "runs", "db": "{db}", "verbose": True}, "ProtocolError", "runs: unknown field 'verbose'"),
    ({"cmd": "search", "db": "{db}", "query": "boats", "lexical": "false"}, "ProtocolError",
     "search: field 'lexical' must be true or false (got 'false')"),
    ({"cmd": "search", "db": "{db}", "query": "boats", "lexical": 0}, "ProtocolError", "field 'lexical' must be"),
    ({"cmd": "search", "db": "{db}", "query": "boats", "run_id": "1"}, "ProtocolError",
     "field 'run_id' must be a whole number"),
    ({"cmd": "search", "db": "{db}", "query": "boats", "run_id": 1.5}, "ProtocolError", "field 'run_id' must be"),
    ({"cmd": "search", "db": "{db}", "query": "boats", "run_id": 2 ** 70}, "IndexFileError", "has no run"),
    ({"cmd": "tile_at", "db": "{db}", "x": 0, "y": 0, "run_id": -1}, "IndexFileError", "has no run -1"),
    # `similar` took any k: 0 answered [], null a TypeError; search's own limits now apply.
    ({"cmd": "similar", "db": "{db}", "tile_db_id": 1, "k": 0}, "QueryError", "k must be a whole number"),
    ({"cmd": "similar", "db": "{db}", "tile_db_id": 1, "k": 5000}, "QueryError", "too many results"),
    ({"cmd": "similar", "db": "{db}", "tile_db_id": 2 ** 70}, "QueryError", "has no captions to compare with"),
    # An inverted extent named the CLI's option (--extent) to a QGIS user.
    ({"cmd": "search", "db": "{db}", "query": "boats", "extent": [10, 10, 0, 0]}, "QueryError",
     "The extent must be MINX MINY MAXX MAXY with MINX <= MAXX"),
])
def test_bad_requests_get_an_error_reply_and_the_worker_lives_on(worker, db, request_, error_type, message):
    request = {k: (v.format(db=db) if isinstance(v, str) else v) for k, v in request_.items()}
    reply = worker.ask({"id": 9, **request})
    assert not reply["ok"] and reply["error"]["type"] == error_type and message in reply["error"]["message"]
    assert worker.ask({"id": 10, "cmd": "hello"})["ok"]


def test_worker_exits_cleanly_when_the_client_disappears():
    process = WorkerProcess()
    assert process.close() == 0


def test_a_damaged_index_gets_the_clis_message_and_type(worker, db, tmp_path):
    import shutil
    import sqlite3

    damaged = tmp_path / "d.tilescribe.sqlite"
    shutil.copy(db, damaged)
    with sqlite3.connect(damaged) as conn:
        conn.execute("update caption_vec_1_vector_chunks00 set vectors = zeroblob(100)")
    reply = worker.ask({"id": 11, "cmd": "search", "db": str(damaged), "query": "boats", "mode": "exact"})
    assert reply["error"]["type"] == "IndexFileError"
    assert reply["error"]["message"].startswith(f"Index {damaged} cannot be read (")
    assert "it is damaged" in reply["error"]["message"] and "restore a copy" in reply["error"]["message"]


def test_the_client_raises_the_workers_error_as_its_core_class():
    from tilescribe.plugin.core.errors import IndexFileError, QueryError
    from tilescribe.plugin.worker.client import WorkerError, remote_error

    remote_error("QueryError", "made once, then reused")
    error = remote_error("QueryError", "The query is empty")
    assert isinstance(error, QueryError) and isinstance(error, WorkerError)
    assert str(error) == "The query is empty" and error.kind == "QueryError"
    assert isinstance(remote_error("IndexFileError", "x"), IndexFileError)
    assert type(remote_error("InternalError", "x")) is WorkerError  # no core class: stays generic


def test_null_optional_fields_mean_their_defaults(worker, db):
    """The protocol's rule (worker_protocol.FIELDS): an optional field may be null, meaning absent."""
    plain = worker.ask({"id": 20, "cmd": "search", "db": db, "query": "ships in a port"})["result"]
    nulls = worker.ask({"id": 21, "cmd": "search", "db": db, "query": "ships in a port", "k": None,
                        "mode": None, "run_id": None, "extent": None, "lexical": None, "embedder": None})
    assert nulls["ok"] and nulls["result"] == plain
    similar = worker.ask({"id": 22, "cmd": "similar", "db": db, "tile_db_id": plain[0]["tile_db_id"], "k": None})
    assert similar["ok"] and [h["tile_id"] for h in similar["result"]] == ["100_0_100x100"]


@pytest.mark.parametrize("tile_db_id", [2 ** 63, 2 ** 70, -(2 ** 70), 99999])
def test_unknown_tile_ids_are_no_tile_whatever_their_size(worker, db, tile_db_id):
    """Ids past SQLite's 64 bits came back as InternalError: OverflowError."""
    reply = worker.ask({"id": 23, "cmd": "captions", "db": db, "tile_db_id": tile_db_id})
    assert reply["ok"] and reply["result"] is None


def test_every_command_has_its_fields_checked():
    """A command missing from FIELDS went unchecked: `runs` without db was a KeyError."""
    import io

    from tilescribe.plugin.worker.server import Worker
    from tilescribe.plugin.worker.protocol import FIELDS

    commands = {*Worker(io.StringIO()).handlers, "index"}
    assert commands - set(FIELDS) == set()
    assert all(FIELDS[cmd].get("db") == FIELDS["info"]["db"] for cmd in commands - {"hello", "cancel", "search"})
    assert FIELDS["search"]["db"][1] is FIELDS["info"]["db"][1]  # search: `db`, or `dbs` for several


def test_a_project_search_that_leaves_an_index_out_says_so_before_its_reply(worker, db, tmp_path, hashing_embedder):
    """Issue 20: with other_embedders 'skip', an index of another embedding model is left out (never mixed
    in), and a 'left_out' event names it and its embedder before the reply (the dock marks it)."""
    from helpers import build_index
    from rasters import write_raster

    other = tmp_path / "other.tilescribe.sqlite"
    build_index(other, write_raster(tmp_path / "other.tif", width=128, height=64), hashing_embedder,
                [["a harbour"], ["boats"]])[0].close()
    request = {"id": 41, "cmd": "search", "dbs": [db, str(other)], "query": "ships in a port", "k": 5,
               "other_embedders": "skip"}
    worker.proc.stdin.write(json.dumps(request) + "\n")
    worker.proc.stdin.flush()
    messages = []
    while not messages or "event" in messages[-1]:
        messages.append(json.loads(worker.proc.stdout.readline()))
    *events, reply = [m for m in messages if m.get("id") == 41]
    assert reply["ok"] and {h["index"] for h in reply["result"]} == {db}
    [event] = events
    assert event["event"] == "left_out"
    assert event["data"]["other_embedders"] == {str(other): "hashing-test, 64-d"}
    assert any("other.tilescribe.sqlite" in note and "another embedder" in note for note in event["data"]["notes"])
    # Refused (the default), the whole search names it; no event precedes the error.
    refused = worker.ask(dict(request, id=42, other_embedders=None))
    assert not refused["ok"] and "another embedding model" in refused["error"]["message"]
