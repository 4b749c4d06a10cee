"""Concurrency: searching while another process indexes, a second indexer refused, a vanished client.

Each test runs the real command or worker in other processes: locks and WAL only
show their behaviour across processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakes import HashingEmbedder
from index_checks import index_state
from rasters import write_raster
from tilescribe.plugin.core.search.search import SearchRequest, search
from tilescribe.plugin.core.index.store import Store

HARNESS = Path(__file__).with_name("cli_harness.py")


def _harness(*argv) -> list[str]:
    return [sys.executable, str(HARNESS), *map(str, argv)]


def _start_indexer(raster: Path, db: Path) -> subprocess.Popen:
    return subprocess.Popen(_harness("index", raster, "--db", db, "--test-model", "--tile-size", 64,
                                     "--variants", 2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _done_tiles(db: Path) -> int:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("select count(*) from tiles where status = 'done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # not created yet


def _wait_until(predicate, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"the indexer ended early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out waiting for the indexer"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C: the indexer finishes the tile in progress, commits and exits 130."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture
def raster(tmp_path) -> Path:
    return write_raster(tmp_path / "r.tif", width=512, height=256)  # 32 tiles of 64 px


@pytest.mark.slow  # two processes and a real index run: seconds
def test_searching_while_another_process_indexes(tmp_path, raster):
    db = tmp_path / "r.tilescribe.sqlite"
    indexer = _start_indexer(raster, db)
    try:
        _wait_until(lambda: _done_tiles(db) >= 1, indexer)
        found = []
        for _ in range(2):  # the real search command, in a third process
            done = subprocess.run(_harness("search", "--db", db, "grey field", "-k", 50, "--format", "json"),
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            found.append(len(json.loads(done.stdout)))
        embedder = HashingEmbedder()
        for _ in range(20):  # and in this process, while the writer commits tile after tile
            with Store(db, readonly=True) as store:
                found.append(len(search(store, embedder, SearchRequest("grey field", k=50))))
            time.sleep(0.05)
        assert indexer.poll() is None, "the indexer must still be running for this test to mean anything"
    finally:
        code, err = _stop(indexer)
    assert all(n >= 1 for n in found) and found == sorted(found)  # results grow as tiles commit
    assert code == 130 and "run the same command again" in err and "Traceback" not in err
    index_state(db, 2)


@pytest.mark.slow  # two indexing processes: ~10 s
def test_a_second_indexer_on_the_same_file_is_refused_and_the_first_goes_on(tmp_path, raster):
    db = tmp_path / "r.tilescribe.sqlite"
    first = _start_indexer(raster, db)
    try:
        _wait_until(lambda: _done_tiles(db) >= 1, first)
        started = time.monotonic()
        second = subprocess.run(_harness("index", raster, "--db", db, "--test-model", "--tile-size", 64,
                                         "--variants", 2), capture_output=True, text=True, timeout=120)
        refused_in = time.monotonic() - started
        assert first.poll() is None
        done_while_refused = _done_tiles(db)
    finally:
        code, err = _stop(first)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip().endswith(
        f"tilescribe: error: Another TileScribe indexer is writing {db} right now. Wait for it to finish "
        "(or stop it), then run again: it will resume where the index stands.")
    assert refused_in < 30  # refused before loading any model
    assert code == 130 and _done_tiles(db) >= done_while_refused  # the first one was not disturbed
    # Once the first is gone, the lock is free: the same command now finishes the index.
    again = subprocess.run(_harness("index", raster, "--db", db, "--test-model", "--tile-size", 64,
                                    "--variants", 2), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [t[0] for t in index_state(db, 2).values()].count("done") == 32


@pytest.mark.slow
def test_worker_client_vanishing_during_an_index_job_cancels_it_and_keeps_the_work(tmp_path, raster):
    db = tmp_path / "r.tilescribe.sqlite"
    worker = subprocess.Popen([sys.executable, "-m", "tilescribe.plugin.worker.server"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    try:
        assert json.loads(worker.stdout.readline())["event"] == "ready"
        request = {"id": 1, "cmd": "index", "db": str(db), "raster": str(raster), "tile_size": 64,
                   "variants": 2, "captioner": {"test_model": True}}
        worker.stdin.write(json.dumps(request) + "\n")
        worker.stdin.flush()
        while True:  # until the first tile is committed
            message = json.loads(worker.stdout.readline())
            assert message.get("ok", True), message
            if message.get("event") == "progress" and message["data"]["done"] >= 1:
                break
        worker.stdin.close()  # the client is gone: both of its pipe ends close
        worker.stdout.close()
        assert worker.wait(timeout=120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    state = index_state(db, 2)
    statuses = [t[0] for t in state.values()]
    assert statuses.count("done") >= 1 and statuses.count("pending") >= 1  # cancelled, work kept
    with Store(db, readonly=True) as store:
        assert store.runs()[0].finished_at is None
    assert not Path(f"{db}.lock").exists() or _lock_is_free(db)


def _lock_is_free(db: Path) -> bool:
    from tilescribe.plugin.core.index.locking import IndexerLock

    IndexerLock(db).check_free()
    return True
