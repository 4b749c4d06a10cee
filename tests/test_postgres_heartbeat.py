"""An indexer's heartbeat (index/postgres/heartbeat.py): a tile captioned for longer than the lease
stays its indexer's while that indexer lives, and goes to another indexer once it is SIGKILLed.

The captioner is a scripted OpenAI-compatible server whose first answer takes several leases (a slow
tile) and every other a fraction of one: the second indexer keeps claiming while the slow tile's
lease would lapse, so without the heartbeat it would take that tile over (checked by hand: with the
heartbeat disabled the first test fails on the slow tile captioned twice).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from fixtures_postgres import start_indexer
from fixtures_postgres import superuser_sql as _sql
from fixtures_server import Reply, completion
from rasters import write_raster

ONE_AT_A_TIME = ("--parallel", 1)  # each indexer captions one tile at a time
TILES = 12  # 256 x 192 px in 64 px tiles
LEASE_S = 1.0
SLOW_S = 5.0  # the slow tile: five leases
FAST_S = 0.3


@pytest.fixture
def raster(tmp_path) -> Path:
    return write_raster(tmp_path / "r.tif", width=256, height=192, crs="EPSG:32618")


@pytest.fixture
def slow_first(scripted_server):
    """The first request is answered after SLOW_S, the others after FAST_S; request times recorded."""
    times: list[float] = []
    lock = threading.Lock()

    def reply(seen) -> Reply:
        with lock:
            times.append(time.monotonic())
            return Reply(200, completion(1), delay_s=SLOW_S if len(times) == 1 else FAST_S)

    scripted_server.script = reply
    return times


def _log(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    return [(int(pid), key) for pid, key in (line.split() for line in path.read_text().splitlines())]


def _by(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def _first_call(log: Path, procs, deadline: float) -> tuple[int, str]:
    while not _log(log):
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline, "no tile reached the captioner"
        time.sleep(0.05)
    return _log(log)[0]


def test_the_heartbeat_renews_the_leases_it_holds_and_stops(pg_cluster, pg_db, raster):
    """In process: a claimed tile's lease is kept alive past its length while the heartbeat beats,
    and lapses once it has stopped (its thread is gone)."""
    from tilescribe.plugin.core.index.opening import open_index
    from tilescribe.plugin.core.indexing.indexer import register_grid
    from tilescribe.plugin.core.raster.tiling import TileGrid, open_raster, read_info

    url = pg_db + f"&lease={LEASE_S}"
    with open_raster(str(raster)) as dataset:
        info = read_info(dataset)
    with open_index(url, create=True) as store:
        run_id = store.create_run(store.upsert_raster(info), store.embedder_id("hash", 8), {"engine": "test"}, "v1",
                                  64, 0, 1)
        register_grid(store, run_id, info, TileGrid(info.width, info.height, 64, 0))
        with store.indexer_lock():
            claimed = store.tiles_to_do(run_id, ["pending"], 0, 1, None)
            assert len(claimed) == 1
            time.sleep(LEASE_S * 2.5)
            (left,) = _sql(pg_cluster, pg_db, "select extract(epoch from lease_until - now()) from tilescribe.tiles"
                           " where id = %s", (claimed[0].id,))[0]
            assert left > 0  # renewed: it would have lapsed 1.5 leases ago
            beats = [t for t in threading.enumerate() if t.name.startswith("tilescribe-lease-")]
            assert len(beats) == 1
        assert not beats[0].is_alive()  # stopped with the indexer's lock
        time.sleep(LEASE_S * 1.5)
        (left,) = _sql(pg_cluster, pg_db, "select extract(epoch from lease_until - now()) from tilescribe.tiles"
                       " where id = %s", (claimed[0].id,))[0]
        assert left < 0  # nobody renews it any more: another indexer may claim it


@pytest.mark.slow  # two processes and a real cluster: ~15 s
def test_a_tile_slower_than_the_lease_stays_with_its_live_indexer(scripted_server, slow_first, pg_cluster, pg_db,
                                                                  raster, tmp_path):
    url = pg_db + f"&lease={LEASE_S}"
    log = tmp_path / "captioned.log"
    procs = [start_indexer(raster, url, scripted_server.url, log, *ONE_AT_A_TIME) for _ in range(2)]
    slow_pid, slow_key = _first_call(log, procs, time.monotonic() + 120)
    errs = [proc.communicate(timeout=180)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errs

    calls = _log(log)
    keys = [key for _, key in calls]
    assert len(keys) == len(set(keys)) == TILES, calls  # the slow tile was captioned once
    # The other indexer was still claiming after the slow tile's lease would have lapsed twice over.
    assert max(slow_first) > slow_first[0] + 2 * LEASE_S, slow_first
    assert _sql(pg_cluster, pg_db, "select done_by from tilescribe.tiles where tile_key = %s",
                (slow_key,)) == [(_by(slow_pid),)]
    assert _sql(pg_cluster, pg_db, "select status, count(*) from tilescribe.tiles group by status") == [("done", TILES)]
    assert _sql(pg_cluster, pg_db, "select count(*), count(distinct tile_id) from tilescribe.captions") == [
        (TILES, TILES)]


@pytest.mark.slow  # two processes, a SIGKILL and a lapsed lease: ~15 s
def test_a_killed_indexers_slow_tile_is_taken_over(scripted_server, slow_first, pg_cluster, pg_db, raster, tmp_path):
    url = pg_db + f"&lease={LEASE_S}"
    log = tmp_path / "captioned.log"
    procs = [start_indexer(raster, url, scripted_server.url, log, *ONE_AT_A_TIME) for _ in range(2)]
    slow_pid, slow_key = _first_call(log, procs, time.monotonic() + 120)
    doomed = next(proc for proc in procs if proc.pid == slow_pid)
    survivor = next(proc for proc in procs if proc is not doomed)
    time.sleep(LEASE_S * 1.5)  # its heartbeat has renewed the slow tile at least once
    assert _sql(pg_cluster, pg_db, "select claimed_by from tilescribe.tiles where tile_key = %s",
                (slow_key,)) == [(_by(slow_pid),)]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    killed_at = time.monotonic()

    survivor_err = survivor.communicate(timeout=180)[1]
    assert survivor.returncode == 0, survivor_err
    if _sql(pg_cluster, pg_db, "select count(*) from tilescribe.tiles where status = 'pending'")[0][0]:
        time.sleep(max(0.0, killed_at + LEASE_S * 1.5 - time.monotonic()))  # done before the lapse: one more
        finisher = start_indexer(raster, url, scripted_server.url, log, *ONE_AT_A_TIME)
        assert finisher.wait(timeout=180) == 0, finisher.stderr.read()

    assert _sql(pg_cluster, pg_db, "select status, count(*) from tilescribe.tiles group by status") == [("done", TILES)]
    assert _sql(pg_cluster, pg_db, "select count(*), count(distinct tile_id) from tilescribe.captions") == [
        (TILES, TILES)]
    (done_by,) = _sql(pg_cluster, pg_db, "select done_by from tilescribe.tiles where tile_key = %s", (slow_key,))[0]
    assert done_by != _by(slow_pid)  # the dead one's heartbeat died with it: another indexer took the tile
    assert [pid for pid, key in _log(log) if key == slow_key][1:] != []  # captioned again, by that one
