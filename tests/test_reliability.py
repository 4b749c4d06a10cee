"""Reliability round 2: what a run must keep apart, and inputs that each need a clear message.

docs/BAD_INPUTS.md, section "Reliability round 2", lists each case with its test here.
Core tests use the fake captioner and the hashing embedder (fast); the embedder look-alike
test uses the real all-MiniLM-L6-v2 with shuffled word embeddings.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes import FakeCaptioner, HashingEmbedder
from helpers import in_process_cli
from rasters import write_raster
from tilescribe.plugin.cli import index_command
from tilescribe.plugin.core.errors import IndexingError, ModelError, RasterError
from tilescribe.plugin.core.indexing.indexer import IndexSettings, index_raster
from tilescribe.plugin.core.index.locking import IndexerLock
from tilescribe.plugin.core.raster.rendering import RenderSettings
from tilescribe.plugin.core.search.search import SearchRequest, search
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.raster.tiling import TileGrid

REPO = Path(__file__).resolve().parents[1]
SETTINGS = IndexSettings(tile_size=100, variants=2)


@pytest.fixture
def raster(tmp_path):
    return write_raster(tmp_path / "r.tif", width=300, height=200)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "r.tilescribe.sqlite"


@pytest.fixture
def cli(monkeypatch, capsys):
    monkeypatch.setattr(index_command, "make_captioner", lambda settings: FakeCaptioner())
    return in_process_cli(monkeypatch, capsys, HashingEmbedder())


def _index(db, raster, settings=SETTINGS, embedder=None, **kwargs):
    captioner = FakeCaptioner()
    with Store(db, create=True) as store:
        report = index_raster(store, captioner, embedder or HashingEmbedder(), str(raster), settings, **kwargs)
    return report, captioner


# --- render settings are part of a run --------------------------------------------------------------

def test_resuming_with_other_bands_is_a_new_run_recorded_with_its_bands(db, raster):
    calls = []
    first, _ = _index(db, raster, IndexSettings(100, 0, 2, RenderSettings(bands=(1, 2, 3))),
                      cancel=lambda: len(calls) >= 2)
    other = IndexSettings(100, 0, 2, RenderSettings(bands=(3, 2, 1)))
    second, captioner = _index(db, raster, other)
    assert second.run_id != first.run_id and captioner.calls == 6  # nothing mixed into the first run
    again, captioner = _index(db, raster, IndexSettings(100, 0, 2, RenderSettings(bands=(2,))))
    assert again.run_id not in (first.run_id, second.run_id) and captioner.calls == 6  # not "0 now"
    with Store(db) as store:
        assert store.run_info(second.run_id).render["bands"] == [3, 2, 1]


def test_the_default_bands_spelled_out_continue_the_same_run(db, raster):
    first, _ = _index(db, raster)
    same, captioner = _index(db, raster, IndexSettings(100, 0, 2, RenderSettings(bands=(1, 2, 3))))
    assert same.run_id == first.run_id and captioner.calls == 0


def test_another_stretch_is_another_run(db, raster):
    first, _ = _index(db, raster)
    other, captioner = _index(db, raster, IndexSettings(100, 0, 2, RenderSettings(high_percentile=90.0)))
    assert other.run_id != first.run_id and captioner.calls == 6


def test_a_run_from_before_render_settings_on_a_paletted_raster_is_not_resumed(db, tmp_path):
    path = _paletted(tmp_path)
    first, _ = _index(db, path)
    with Store(db) as store:
        store._conn.execute("update runs set render = null")  # rendered black, by an older version
    again, captioner = _index(db, path)
    assert again.run_id != first.run_id and captioner.calls == 1


def test_a_run_from_before_render_settings_were_recorded_is_resumed_and_adopts_them(db, raster):
    calls = []
    first, _ = _index(db, raster, cancel=lambda: calls.append(1) or len(calls) > 3)
    with Store(db) as store:
        store._conn.execute("update runs set render = null")
    resumed, captioner = _index(db, raster)
    assert resumed.run_id == first.run_id and 0 < captioner.calls < 6
    with Store(db) as store:
        assert store.run_info(first.run_id).render["bands"] == [1, 2, 3]


# --- embedders are told apart by what they compute --------------------------------------------------

class OtherHashing(HashingEmbedder):
    """Another model under the same name and size: words land in other buckets."""

    def embed(self, texts):
        return super().embed([" ".join(w[::-1] for w in t.split()) for t in texts])


def test_a_look_alike_embedder_is_refused_for_search_and_for_resuming(db, raster):
    _index(db, raster)
    look_alike = OtherHashing()
    with Store(db) as store, pytest.raises(ModelError, match="computes other vectors than the model hashing-test"):
        search(store, look_alike, SearchRequest("a bright tile"))
    with pytest.raises(ModelError, match="not by their folder name"):
        _index(db, raster, embedder=look_alike)
    with Store(db) as store:  # nothing mixed in
        assert store._conn.execute("select count(*) from runs").fetchone()[0] == 1


def test_the_same_model_under_another_name_is_the_same_embedder(db, raster):
    first, _ = _index(db, raster)
    renamed = HashingEmbedder(name="my-copy-of-it")
    again, captioner = _index(db, raster, embedder=renamed)
    assert again.run_id == first.run_id and captioner.calls == 0
    with Store(db) as store:
        assert search(store, renamed, SearchRequest("a bright tile", k=2))


def test_an_index_without_probe_vectors_records_them_after_checking_its_captions(db, raster):
    _index(db, raster)
    with Store(db) as store:
        store._conn.execute("update embedders set probe = null")
    with Store(db) as store, pytest.raises(ModelError, match="computes other vectors"):
        search(store, OtherHashing(), SearchRequest("a bright tile"))  # told by its own stored captions
    with Store(db) as store:
        assert store._conn.execute("select probe from embedders").fetchone()[0] is None  # not recorded
        assert search(store, HashingEmbedder(), SearchRequest("a bright tile", k=2))
        assert store._conn.execute("select probe from embedders").fetchone()[0] is not None


def test_a_real_minilm_look_alike_in_a_folder_of_the_same_name_is_refused(db, raster, minilm):
    import copy

    import torch

    _index(db, raster, embedder=minilm)
    look_alike = copy.deepcopy(minilm)
    look_alike._tilescribe_probe = None
    words = look_alike._model[0].auto_model.embeddings.word_embeddings
    with torch.no_grad():
        shuffled = torch.randperm(words.weight.shape[0], generator=torch.Generator().manual_seed(0))
        words.weight.copy_(words.weight[shuffled])
    assert look_alike.name == minilm.name and look_alike.dim == minilm.dim
    with Store(db) as store:
        assert search(store, minilm, SearchRequest("a bright tile", k=2))
        with pytest.raises(ModelError, match="all-MiniLM-L6-v2"):
            search(store, look_alike, SearchRequest("a bright tile", k=2))


# --- a raster edited in place -----------------------------------------------------------------------

@pytest.fixture
def big_raster(tmp_path):
    """1200 x 1200 x 3 uncompressed (4.3 MB): its middle is outside the first and last MiB."""
    return write_raster(tmp_path / "ortho.tif", width=1200, height=1200, seed=3)


def _edit(path, window, value):
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path, "r+") as dst:
        col, row, width, height = window
        dst.write(np.full((3, height, width), value, dtype="uint8") + np.arange(width, dtype="uint8"),
                  window=Window(col, row, width, height))


def _captions(db):
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("select t.tile_key, group_concat(c.caption) from tiles t join captions c"
                                 " on c.tile_id = t.id group by t.id").fetchall())
    finally:
        conn.close()


def test_a_raster_edited_in_place_recaptions_only_the_tiles_that_changed(db, big_raster):
    settings = IndexSettings(tile_size=400, variants=2)
    first, _ = _index(db, big_raster, settings)
    size, before = big_raster.stat().st_size, _captions(db)
    _edit(big_raster, (450, 450, 100, 100), 10)  # inside the middle tile only
    assert big_raster.stat().st_size == size
    again, captioner = _index(db, big_raster, settings)
    assert again.run_id == first.run_id and captioner.calls == 1
    after = _captions(db)
    assert after["400_400_400x400"] != before["400_400_400x400"]
    assert {k: v for k, v in after.items() if k != "400_400_400x400"} == \
        {k: v for k, v in before.items() if k != "400_400_400x400"}
    assert any("changed since run" in w and "1 of 9" in w for w in again.warnings)


def test_an_edit_that_changes_the_fingerprint_is_still_the_same_raster(db, big_raster):
    settings = IndexSettings(tile_size=400, variants=2)
    first, _ = _index(db, big_raster, settings)
    _edit(big_raster, (0, 0, 50, 50), 200)  # the first MiB: the fingerprint changes
    again, captioner = _index(db, big_raster, settings)
    assert again.run_id == first.run_id and captioner.calls == 1


def test_a_vrt_whose_source_was_edited_recaptions_the_changed_tiles(db, tmp_path):
    source = write_raster(tmp_path / "source.tif", width=300, height=200)
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(source)], check=True)
    first, _ = _index(db, vrt)
    _edit(source, (150, 20, 30, 30), 50)  # the VRT file itself is untouched
    again, captioner = _index(db, vrt)
    assert again.run_id == first.run_id and captioner.calls == 1


def test_a_file_touched_without_a_change_recaptions_nothing(db, big_raster):
    settings = IndexSettings(tile_size=400, variants=2)
    _index(db, big_raster, settings)
    later = time.time() + 10
    os.utime(big_raster, (later, later))
    _, captioner = _index(db, big_raster, settings)
    assert captioner.calls == 0


# --- the indexer lock ---------------------------------------------------------------------------------

def test_a_symlinked_index_path_meets_the_same_lock(tmp_path, db):
    link = tmp_path / "link.tilescribe.sqlite"
    db.touch()
    link.symlink_to(db)
    with IndexerLock(db):
        with pytest.raises(IndexingError, match="Another TileScribe indexer is writing"):
            IndexerLock(link).acquire()
    (tmp_path / "sub").mkdir()
    with IndexerLock(link):
        with pytest.raises(IndexingError):
            IndexerLock(tmp_path / "sub" / ".." / db.name).acquire()


def test_a_lock_left_by_a_dead_indexer_is_noticed_and_a_clean_end_leaves_none(db):
    db.touch()
    Path(f"{db}.lock").write_text("12345")  # what a SIGKILLed indexer leaves
    IndexerLock(db).check_free()  # the early check must not wipe the evidence
    with IndexerLock(db) as lock:
        assert lock.previous_holder_died
    with IndexerLock(db) as lock:
        assert not lock.previous_holder_died


# --- which run a search searched ---------------------------------------------------------------------

def test_search_names_the_run_it_searched_when_the_index_holds_several(cli, tmp_path, raster, db):
    other = write_raster(tmp_path / "other.tif", width=200, height=200, seed=7)
    assert cli("index", raster, "--db", db, "--tile-size", 100, "--variants", 2)[0] == 0
    code, out, err = cli("search", "a bright tile", "--db", db, "--format", "json")
    assert code == 0 and "note:" not in err  # one run: nothing to say
    assert cli("index", other, "--db", db, "--tile-size", 100, "--variants", 2)[0] == 0
    code, out, err = cli("search", "a bright tile", "--db", db, "--format", "json")
    assert code == 0 and json.loads(out)[0]["raster"].endswith("other.tif")
    assert f"note: searched run 2 only ({other}" in err and "also holds run 1" in err and "--run N" in err
    code, out, err = cli("search", "a bright tile", "--db", db, "--run", 1)
    assert code == 0 and "note:" not in err
    code, out, err = cli("info", "--db", db)
    assert "run 1: raster 1" in out and "run 2: raster 2" in out and "overlap 0, bands 1 2 3:" in out


# --- tile sizes and slivers ----------------------------------------------------------------------------

def test_a_huge_tile_size_is_refused_with_the_limit(cli, raster, db):
    code, out, err = cli("index", raster, "--db", db, "--tile-size", 12288)
    assert code == 2 and "Tile size 12288 px is too large: use at most 4096 px" in err and "Traceback" not in err


def test_edge_slivers_join_the_tile_beside_them_and_the_user_is_told(cli, tmp_path, db):
    path = write_raster(tmp_path / "sliver.tif", width=201, height=102)
    code, out, err = cli("index", path, "--db", db, "--tile-size", 100, "--variants", 2)
    assert code == 0 and "2 of 2 tiles captioned" in err  # not 6, four of them slivers of 1-2 px
    assert "warning: edge strips narrower than 12 px are merged into the tiles beside them" in err
    assert [w.as_list() for w in TileGrid(201, 102, 100).windows()] == \
        [[0, 0, 100, 102], [100, 0, 101, 102]]


def test_a_raster_too_thin_to_describe_is_skipped_with_the_reason(cli, tmp_path, db):
    path = write_raster(tmp_path / "thin.tif", width=1, height=200)
    code, out, err = cli("index", path, "--db", db, "--tile-size", 512)
    assert code == 0 and "1 skipped" in err
    with Store(db) as store:
        assert "too small to describe (1x200 px" in store.tiles(1)[0].reason


# --- paletted rasters --------------------------------------------------------------------------------

def _paletted(tmp_path) -> Path:
    import rasterio

    path = tmp_path / "classes.tif"
    data = np.random.default_rng(1).integers(1, 4, size=(1, 100, 100)).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1, dtype="uint8",
                       photometric="palette") as dst:
        dst.write(data)
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (0, 128, 0, 255), 2: (0, 0, 255, 255),
                               3: (255, 255, 0, 255)})
    return path


def test_a_paletted_raster_is_rendered_through_its_colour_table(tmp_path, db):
    from PIL import Image

    report, captioner = _index(db, _paletted(tmp_path))
    pixels = np.asarray(Image.open(BytesIO(captioner.images[0])).convert("RGB")).reshape(-1, 3)
    assert {tuple(p) for p in pixels} == {(0, 128, 0), (0, 0, 255), (255, 255, 0)}
    with Store(db) as store:
        assert store.run_info(report.run_id).render["palette"] is True


# --- the worker -----------------------------------------------------------------------------------------

class Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "tilescribe.plugin.worker.server"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        assert json.loads(self.proc.stdout.readline())["event"] == "ready"

    def send_line(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


@pytest.fixture
def worker():
    process = Worker()
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
    process.proc.wait()


def test_worker_survives_a_deeply_nested_line_and_names_wrongly_typed_fields(worker, tmp_path):
    reply = worker.send_line("[" * 100_000)
    assert reply["error"]["type"] == "ProtocolError" and "nested too deeply" in reply["error"]["message"]
    reply = worker.send_line(json.dumps({"id": 1, "cmd": "search", "db": str(tmp_path / "x"), "query": "a",
                                         "k": "ten"}))
    assert reply == {"id": 1, "ok": False, "error": {
        "type": "ProtocolError", "message": "search: field 'k' must be a whole number (got 'ten')"}}
    reply = worker.send_line(json.dumps({"id": 2, "cmd": "tile_at", "db": "x", "x": "1", "y": 0}))
    assert "field 'x' must be a finite number" in reply["error"]["message"]
    assert worker.send_line(json.dumps({"id": 3, "cmd": "hello"}))["ok"]  # still reading


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(["info", "search", "similar", "tile_at", "captions"]),
       fields=st.dictionaries(st.sampled_from(["query", "k", "run_id", "extent", "mode", "tile_db_id", "x", "y"]),
                              JSON, max_size=5))
def test_any_request_fields_give_a_clear_error_never_an_internal_one(tmp_path, cmd, fields):
    import io

    from tilescribe.plugin.worker.server import Worker

    out = io.StringIO()
    Worker(out).dispatch({"id": 1, "cmd": cmd, "db": str(tmp_path / "none.tilescribe.sqlite"), **fields})
    reply = json.loads(out.getvalue())
    assert reply["error"]["type"] in ("ProtocolError", "QueryError", "IndexFileError"), reply


def test_worker_sigterm_stops_with_a_message(worker):
    import signal

    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=60) == 143
    assert "terminated (SIGTERM)" in worker.proc.stderr.read()


@pytest.mark.slow
def test_worker_sigterm_during_an_index_job_stops_it_and_keeps_the_work(tmp_path):
    import signal

    raster = write_raster(tmp_path / "big.tif", width=1024, height=1024)
    db = tmp_path / "big.tilescribe.sqlite"
    worker = Worker()
    try:
        worker.proc.stdin.write(json.dumps({"id": 1, "cmd": "index", "db": str(db), "raster": str(raster),
                                            "tile_size": 16, "variants": 1, "captioner": {"test_model": True}}) + "\n")
        worker.proc.stdin.flush()
        while True:  # until a tile is committed
            message = json.loads(worker.proc.stdout.readline())
            assert message.get("ok", True), message
            if message.get("event") == "progress" and message["data"]["done"] >= 1:
                break
        worker.proc.send_signal(signal.SIGTERM)
        messages = [json.loads(line) for line in worker.proc.stdout]
        assert worker.proc.wait(timeout=120) == 143
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
    assert any(m.get("event") == "terminated" for m in messages)
    result = next(m for m in messages if m.get("id") == 1 and "ok" in m)
    assert result["ok"] and result["result"]["cancelled"]
    with Store(db, readonly=True) as store:
        counts = store.tile_counts(1)
    assert counts["done"] == result["result"]["done"] >= 1 and counts["pending"] > 0


def test_index_command_sigterm_stops_after_the_tile_in_progress(tmp_path):
    import signal

    raster = write_raster(tmp_path / "big.tif", width=1024, height=1024)
    db, log = tmp_path / "big.tilescribe.sqlite", tmp_path / "calls.log"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "cli_harness.py"), "index", str(raster), "--db", str(db),
         "--test-model", "--tile-size", "16", "--variants", "1"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TILESCRIBE_TEST_CAPTION_LOG": str(log)})
    deadline = time.monotonic() + 120
    while (not log.exists() or len(log.read_text().splitlines()) < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert "stopped:" in err and "run the same command again to continue" in err
    with Store(db, readonly=True) as store:
        assert store.tile_counts(1)["done"] >= 1 and store.tile_counts(1)["pending"] > 0


# --- the -wal file ---------------------------------------------------------------------------------------

KILLED_WRITER = """
import os, sys
from tilescribe.plugin.core.index.store import Store
store = Store(sys.argv[1], create=True)
store._conn.execute("create table filler (x)")
store._conn.executemany("insert into filler values (?)", [(os.urandom(500),) for _ in range(200)])
os._exit(9)  # killed: no checkpoint
"""


def test_info_notes_an_uncheckpointed_wal_and_a_lone_copy_says_to_copy_it(cli, tmp_path, db):
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)], check=False)
    assert Path(f"{db}-wal").stat().st_size > 32
    lone = tmp_path / "copy.tilescribe.sqlite"
    lone.write_bytes(db.read_bytes())
    code, out, err = cli("info", "--db", db)
    assert code == 0 and "note:" in err and "-wal holds" in err and "copy both files together" in err
    code, out, err = cli("info", "--db", lone)
    assert code == 2 and f"copy {lone.name}-wal along with it" in err


def test_a_normal_end_leaves_everything_in_the_index_file(db, raster, tmp_path):
    with Store(db, create=True):
        pass
    reader = sqlite3.connect(db)  # QGIS with the index open: the indexer is not the last to close it
    reader.execute("select count(*) from tiles").fetchone()
    try:
        _index(db, raster)
        lone = tmp_path / "copy.tilescribe.sqlite"
        lone.write_bytes(db.read_bytes())
    finally:
        reader.close()
    with Store(lone, readonly=True) as store:
        assert store.tile_counts(1)["done"] == 6


# --- small bad inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["search", "a bright tile", "--extent", "nan", "nan", "nan", "nan"], "four finite numbers"),
    (["search", "a bright tile", "--extent", "0", "0", "inf", "1"], "four finite numbers"),
    (["search", "a bright tile", "--run", "99999999999999999999"], "has no run 99999999999999999999"),
])
def test_impossible_search_settings_exit_2(cli, raster, db, argv, says):
    assert cli("index", raster, "--db", db, "--tile-size", 100, "--variants", 2)[0] == 0
    code, out, err = cli(*argv, "--db", db)
    assert code == 2 and says in err and "Traceback" not in err and out == ""


def test_test_model_and_a_server_together_are_refused(monkeypatch, capsys, raster, db):
    run = in_process_cli(monkeypatch, capsys, HashingEmbedder())
    code, out, err = run("index", raster, "--db", db, "--test-model", "--server", "http://127.0.0.1:9/v1",
                         "--server-model", "m")
    assert code == 2 and "--test-model and --server both name a captioning model" in err


# --- tilescribe check ----------------------------------------------------------------------------------

def test_check_passes_a_whole_index(cli, raster, db):
    assert cli("index", raster, "--db", db, "--tile-size", 100, "--variants", 2)[0] == 0
    code, out, err = cli("check", "--db", db)
    assert code == 0 and "ok: SQLite integrity check: ok" in out
    assert "run 1: 12 vectors (64-d) agree with their captions" in out and "3 known searches" in out


def test_check_finds_vectors_that_no_longer_match(cli, raster, db):
    assert cli("index", raster, "--db", db, "--tile-size", 100, "--variants", 2)[0] == 0
    # What a damaged page can do: vec0's map from caption to chunk offset points at another
    # vector. (With one copy of each vector, a vector changed in place has nothing to be
    # compared with: the check cannot see that.)
    with Store(db) as store:
        store._conn.execute("update caption_vec_1_rowids set chunk_offset = chunk_offset + 1 where rowid = 1")
        store._conn.execute("delete from caption_vec_1 where caption_id = 5")
    code, out, err = cli("check", "--db", db)
    assert code == 2 and "failed 3 check(s)" in err and "Run 1 has 12 captions but 11 vectors (12 recorded)" in err
    assert "caption 1's own vector does not find it" in err and "Run 1: captions [5] have no vector" in err


def test_check_reports_a_missing_word_table_as_a_problem(cli, raster, db):
    """Issue 14 review: `check` stopped with `internal error: ... no such table: caption_fts`."""
    assert cli("index", raster, "--db", db, "--tile-size", 100, "--variants", 2)[0] == 0
    with Store(db) as store:
        store._conn.execute("drop table caption_fts")
    code, out, err = cli("check", "--db", db)
    # One problem: the runs' counts, vectors and known searches were still checked, and passed.
    assert code == 2 and "failed 1 check(s)" in err and "The word index (table caption_fts) is missing" in err


@pytest.mark.parametrize("column", ["captioner", "render"])
def test_a_damaged_run_record_is_named_by_search_info_and_check(cli, raster, db, column):
    """Issue 14 review: a run record whose JSON no longer parses gave `internal error: JSONDecodeError`
    in search and info, while check said every check passed."""
    assert cli("index", raster, "--db", db, "--tile-size", 100, "--variants", 2)[0] == 0
    with Store(db) as store:
        store._conn.execute(f"update runs set {column} = '{{not json'")
    for command in (("search", "--db", db, "a tile"), ("info", "--db", db)):
        code, out, err = cli(*command)
        assert code == 2 and f"the record of run 1 is damaged ({column} " in err and "Restore a copy" in err
    code, out, err = cli("check", "--db", db)
    assert code == 2 and f"failed 1 check(s): The record of run 1 is damaged ({column} " in err


def test_resuming_after_a_crash_checks_the_run_and_stops_on_damage(db, raster):
    calls = []
    _index(db, raster, cancel=lambda: calls.append(1) or len(calls) > 3)
    with Store(db) as store:
        store._conn.execute("delete from caption_vec_1 where caption_id = 1")
    Path(f"{db}.lock").write_text("12345")  # the last indexer died holding the lock
    for _ in range(2):  # refused again: the refusal is no clean end either
        with pytest.raises(IndexingError, match="looks damaged after the last indexer stopped abruptly"):
            _index(db, raster)
    from tilescribe.plugin.core.index.health import check_index

    with Store(db) as store:
        assert not check_index(store).ok


def test_resuming_after_a_crash_on_a_whole_index_goes_on(db, raster):
    calls = []
    _index(db, raster, cancel=lambda: calls.append(1) or len(calls) > 3)
    Path(f"{db}.lock").write_text("12345")
    report, captioner = _index(db, raster)
    assert captioner.calls > 0 and report.progress.done == 6


def test_tile_size_bound_is_checked_where_index_settings_are_made():
    with pytest.raises(RasterError, match="at most 4096"):
        IndexSettings(tile_size=5000)
    assert len(TileGrid(10_000, 10_000, 5000)) == 4  # imported captions may cover larger windows
