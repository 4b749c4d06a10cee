"""Many `tilescribe index` processes on one raster and one PostgreSQL index: they split the tiles,
none is captioned twice, and the tiles of one SIGKILLed mid-run are redone once its lease lapses.

The captioner is a scripted OpenAI-compatible server answering after a fixed delay (a slow GPU box
stand-in): the processes spend their time waiting on it, as real indexers do, so the split does
not depend on how fast this machine's CPUs are.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import pytest

from fixtures_postgres import start_indexer
from fixtures_postgres import superuser_sql as _sql
from fixtures_server import Reply, completion
from rasters import write_raster

TILES = 40  # 640 x 256 px in 64 px tiles


@pytest.fixture
def raster(tmp_path) -> Path:
    return write_raster(tmp_path / "wide.tif", width=640, height=256, crs="EPSG:32618")


def _captioned_now(stderr: str) -> int:
    found = re.findall(r"\((\d+) now\)", stderr)
    assert found, stderr
    return int(found[-1])


def _log(path: Path) -> list[tuple[int, str]]:
    return [(int(pid), key) for pid, key in (line.split() for line in path.read_text().splitlines())]


def _by(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


@pytest.mark.slow  # processes and a real cluster: ~10 s
def test_two_indexers_split_the_tiles_and_none_is_captioned_twice(scripted_server, pg_cluster, pg_db, raster,
                                                                    tmp_path):
    scripted_server.script = [Reply(200, completion(1), delay_s=0.2)]
    log = tmp_path / "captioned.log"
    procs = [start_indexer(raster, pg_db, scripted_server.url, log) for _ in range(2)]
    errs = [proc.communicate(timeout=180)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errs

    calls = _log(log)
    keys = [key for _, key in calls]
    assert len(keys) == len(set(keys)) == TILES  # each tile went to the captioner once
    assert {pid for pid, _ in calls} == {proc.pid for proc in procs}  # both took a share
    assert sum(_captioned_now(err) for err in errs) == TILES
    assert _sql(pg_cluster, pg_db, "select count(*) from tilescribe.runs where finished_at is not null") == [(1,)]
    done_by = dict(_sql(pg_cluster, pg_db, "select done_by, count(*) from tilescribe.tiles group by done_by"))
    assert done_by == {_by(proc.pid): sum(1 for pid, _ in calls if pid == proc.pid) for proc in procs}
    assert _sql(pg_cluster, pg_db, "select count(*), count(distinct tile_id) from tilescribe.captions") == [
        (TILES, TILES)]
    assert _sql(pg_cluster, pg_db, "select count(*) from tilescribe.tiles where claimed_by is not null") == [(0,)]


@pytest.mark.slow  # processes, a SIGKILL and a lapsed lease: ~15 s
def test_a_killed_indexers_tiles_are_redone_once_its_lease_lapses(scripted_server, pg_cluster, pg_db, raster,
                                                                   tmp_path):
    from tilescribe.plugin.core.index.opening import open_index

    scripted_server.script = [Reply(200, completion(1), delay_s=0.25)]
    url = pg_db + "&lease=3"
    log = tmp_path / "captioned.log"
    doomed, survivor = (start_indexer(raster, url, scripted_server.url, log) for _ in range(2))
    deadline = time.monotonic() + 120
    while True:  # until the doomed one has stored tiles and holds a claim
        held = _sql(pg_cluster, pg_db, "select count(*) filter (where done_by = %(me)s), count(*) filter (where"
                    " claimed_by = %(me)s and status = 'pending') from tilescribe.tiles", {"me": _by(doomed.pid)}) \
            if _sql(pg_cluster, pg_db, "select to_regclass('tilescribe.tiles')")[0][0] else [(0, 0)]
        if held[0][0] >= 2 and held[0][1] >= 1:
            break
        assert doomed.poll() is None and time.monotonic() < deadline, doomed.stderr.read() if doomed.poll() else ""
        time.sleep(0.05)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    claimed = {key for (key,) in _sql(pg_cluster, pg_db, "select tile_key from tilescribe.tiles where claimed_by = %s"
                                      " and status = 'pending'", (_by(doomed.pid),))}
    assert claimed  # it died holding tiles (checked a moment before: an answer takes 0.25 s)
    with open_index(url, readonly=True) as store:  # `tilescribe info` shows the dead one's claim
        workers = {w["indexer"]: w for w in store.workers(store.runs()[0].id)}
    assert workers[_by(doomed.pid)]["claimed"] >= 1

    survivor_err = survivor.communicate(timeout=180)[1]
    assert survivor.returncode == 0, survivor_err
    finisher_now = 0
    if _sql(pg_cluster, pg_db, "select count(*) from tilescribe.tiles where status = 'pending'")[0][0]:
        time.sleep(3)  # the survivor finished before the lease lapsed: a third run picks them up
        finisher = start_indexer(raster, url, scripted_server.url, log)
        finisher_err = finisher.communicate(timeout=180)[1]
        assert finisher.returncode == 0, finisher_err
        finisher_now = _captioned_now(finisher_err)

    assert _sql(pg_cluster, pg_db, "select status, count(*) from tilescribe.tiles group by status") == [("done", TILES)]
    assert _sql(pg_cluster, pg_db, "select count(*), count(distinct tile_id) from tilescribe.captions") == [
        (TILES, TILES)]
    stored_by_doomed = _sql(pg_cluster, pg_db, "select count(*) from tilescribe.tiles where done_by = %s",
                            (_by(doomed.pid),))[0][0]
    # Every tile stored once: what the dead one stored plus what the others captioned is all of them.
    assert stored_by_doomed + _captioned_now(survivor_err) + finisher_now == TILES
    calls = _log(log)
    in_flight = {key for pid, key in calls if pid == doomed.pid} - {
        key for (key,) in _sql(pg_cluster, pg_db, "select tile_key from tilescribe.tiles where done_by = %s",
                               (_by(doomed.pid),))}
    assert in_flight <= claimed  # what it captioned and did not store, it held ...
    redone = [key for pid, key in calls if pid != doomed.pid and key in claimed]
    assert sorted(redone) == sorted(claimed)  # ... and another indexer captioned each of those once
    others = [key for pid, key in calls if pid != doomed.pid]
    assert len(others) == len(set(others))
