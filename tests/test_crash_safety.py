"""Crash safety: `tilescribe index` killed anywhere, or stopped by a full disk, loses nothing and resumes.

The kill tests run the real command in a subprocess with the tiny test model and
SIGKILL it (no handler runs, as with a power cut or the OOM killer). After each kill
the index must be whole (index_checks.index_state) and every tile committed before
must be exactly as it was: never captioned again.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fakes import FakeCaptioner, HashingEmbedder
from index_checks import index_state
from rasters import write_raster
from tilescribe.plugin.cli import index_command
from tilescribe.plugin.cli.main import main
from tilescribe.plugin.core.index import opening
from tilescribe.plugin.core.index.store import Store

HARNESS = Path(__file__).with_name("cli_harness.py")
KILLS = 20
VARIANTS = 3


def _raster(path: Path, width: int, height: int) -> Path:
    """Random content, with the last 64 px tile of the first row nodata (skipped, never captioned)."""
    data = np.random.default_rng(11).integers(1, 250, size=(3, height, width)).astype("uint8")
    data[:, :64, width - 64:] = 0
    return write_raster(path, width=width, height=height, nodata=0, data=data)


def _handed_to_captioner(log: Path) -> dict[int, list[str]]:
    calls: dict[int, list[str]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            pid, key = line.split()
            calls.setdefault(int(pid), []).append(key)
    return calls


def _assert_unchanged(before: dict, after: dict) -> None:
    """Tiles done before are still done with the same caption ids and timestamp: not captioned again."""
    for key, done in before.items():
        assert after.get(key) == done, f"committed tile {key} changed: {done} -> {after.get(key)}"


@pytest.mark.slow
def test_sigkill_at_twenty_random_points_loses_nothing_and_resumes(tmp_path):
    raster = _raster(tmp_path / "r.tif", 640, 512)  # 10 x 8 tiles of 64 px, one of them nodata
    db = tmp_path / "r.tilescribe.sqlite"
    log = tmp_path / "captioned.log"
    argv = [sys.executable, str(HARNESS), "index", str(raster), "--db", str(db), "--test-model",
            "--tile-size", "64", "--variants", str(VARIANTS)]
    env = {**os.environ, "TILESCRIBE_TEST_CAPTION_LOG": str(log)}
    rng = random.Random(20240607)
    committed: dict[str, tuple] = {}
    done_at_start: dict[int, set] = {}
    for kill in range(KILLS):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        done_at_start[proc.pid] = set(committed)
        if kill % 3 == 0:  # during start-up: imports, model load, schema, run and grid registration
            time.sleep(rng.uniform(0.05, 1.0))
        else:  # during captioning: 1-2 tiles after the last commit, somewhere in the next tile
            _wait_for_done_tiles(db, len(committed) + rng.randint(1, 2), proc, timeout_s=120)
            time.sleep(rng.uniform(0.0, 0.2))
        assert proc.poll() is None, "the indexer ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err.decode(errors="replace")
        state = index_state(db, VARIANTS)
        _assert_unchanged(committed, state)
        committed.update({key: tile for key, tile in state.items() if tile[0] == "done"})
    assert len(committed) < 79, "every tile was done before the last kill"

    final = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    state = index_state(db, VARIANTS)
    _assert_unchanged(committed, state)
    statuses = [status for status, _, _ in state.values()]
    assert len(state) == 80 and statuses.count("done") == 79 and statuses.count("skipped") == 1
    calls = _handed_to_captioner(log)
    for pid, keys in calls.items():  # no process captioned a tile committed before it started
        assert not set(keys) & done_at_start.get(pid, set()), pid
    # Each killed process wastes at most the one caption in flight (the llama backend does one at a time).
    assert sum(len(keys) for keys in calls.values()) <= 79 + KILLS
    with Store(db, readonly=True) as store:
        assert store.runs()[0].finished_at


@pytest.mark.slow
def test_swellendam_mosaic_killed_mid_run_resumes_with_every_tile_once(shared_data, tmp_path):
    """Issue 3's must-show: the real command on the shared mosaic, SIGKILLed, then run again."""
    raster = shared_data / "rasters" / "swellendam_aerial_2010_mosaic_epsg4326.tif"
    db = tmp_path / "swellendam.tilescribe.sqlite"
    argv = [sys.executable, "-m", "tilescribe.plugin.cli", "index", str(raster), "--db", str(db),
            "--test-model", "--tile-size", "512", "--variants", str(VARIANTS)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_done_tiles(db, 3, proc, timeout_s=240)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    before = {k: t for k, t in index_state(db, VARIANTS).items() if t[0] == "done"}
    assert 3 <= len(before) < 24

    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr
    assert f"24 of 24 tiles captioned ({24 - len(before)} now)" in resumed.stderr
    state = index_state(db, VARIANTS)
    _assert_unchanged(before, state)
    assert len(state) == 24 == 3 * 8  # 1098 x 4059 px in 512 px tiles, each tile key once
    assert all(status == "done" and len(ids) == VARIANTS for status, ids, _ in state.values())


def _wait_for_done_tiles(db: Path, count: int, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the indexer ended before it could be killed"
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                if conn.execute("select count(*) from tiles where status = 'done'").fetchone()[0] >= count:
                    return
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # not created yet
        time.sleep(0.05)
    pytest.fail(f"fewer than {count} tiles were captioned within {timeout_s} s")


# --- a full disk -------------------------------------------------------------------------------

@pytest.fixture
def fake_models(monkeypatch):
    """The CLI with the fake captioner and hashing embedder: this is about storage, not models."""
    captioners = []

    def make(settings):
        captioners.append(FakeCaptioner())
        return captioners[-1]

    monkeypatch.setattr(index_command, "make_captioner", make)
    monkeypatch.setattr(index_command, "load_embedder", lambda folder: HashingEmbedder())
    return captioners


def test_disk_full_stops_with_a_clear_message_and_the_index_resumes(tmp_path, monkeypatch, capsys, fake_models):
    raster = write_raster(tmp_path / "r.tif", width=256, height=256)
    db = tmp_path / "r.tilescribe.sqlite"
    argv = ["index", str(raster), "--db", str(db), "--tile-size", "32", "--variants", str(VARIANTS)]
    opened: list[Store] = []

    class FillsUp(index_command.ProgressBar):
        def __call__(self, p):  # after 5 tiles the index may not grow any more: the disk is full
            super().__call__(p)
            if p.done == 5:
                conn = opened[-1]._conn
                conn.execute(f"pragma max_page_count = {conn.execute('pragma page_count').fetchone()[0]}")

    class Recorded(Store):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(opening, "Store", Recorded)  # what index_command's open_index opens a file with
    monkeypatch.setattr(index_command, "ProgressBar", FillsUp)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"tilescribe: error: No space left to write the index {db}" in err
    assert "Free some space" in err and "run the same command again" in err and "Traceback" not in err
    assert err.count("error:") == 1
    before = index_state(db, VARIANTS)
    done = {k: t for k, t in before.items() if t[0] == "done"}
    assert 5 <= len(done) < 64  # what was committed before the disk filled up is there

    monkeypatch.setattr(index_command, "ProgressBar", index_command.ProgressBar)  # space freed
    assert main(argv) == 0
    after = index_state(db, VARIANTS)
    _assert_unchanged(done, after)
    assert [t[0] for t in after.values()].count("done") == 64
    assert fake_models[-1].calls == 64 - len(done)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1.2 MB tmpfs: a real disk that fills up (needs root; skipped elsewhere)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount_point)],
                          capture_output=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def test_a_real_full_disk_is_reported_and_resumed_once_space_is_freed(tmp_path, small_tmpfs, capsys, fake_models):
    raster = write_raster(tmp_path / "r.tif", width=512, height=512)
    db = small_tmpfs / "r.tilescribe.sqlite"
    argv = ["index", str(raster), "--db", str(db), "--tile-size", "32", "--variants", str(VARIANTS)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"No space left to write the index {db}" in err and "Traceback" not in err
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True, timeout=30)
    before = {k: t for k, t in index_state(db, VARIANTS).items() if t[0] == "done"}
    assert main(argv) == 0
    after = index_state(db, VARIANTS)
    _assert_unchanged(before, after)
    assert [t[0] for t in after.values()].count("done") == 256
