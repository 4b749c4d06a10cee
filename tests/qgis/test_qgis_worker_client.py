"""The worker client against the real worker process: routing, typed errors, crash, restart, stop."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.qgis


@pytest.fixture
def client(qgis_app):
    from tilescribe.plugin.qgis.settings import PLUGIN_DIR, PluginSettings
    from tilescribe.plugin.worker.client import WorkerClient

    client = WorkerClient(PluginSettings().python(), PLUGIN_DIR)
    yield client
    client.stop()


def test_replies_reach_the_thread_that_asked(client, captioned_index):
    db = str(captioned_index.with_name("neon.tilescribe.sqlite"))

    def captions(tile_db_id):
        return client.request("captions", db=db, tile_db_id=tile_db_id, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(captions, [1, 2, 3, 4] * 4))
    assert [r["tile_db_id"] for r in records] == [1, 2, 3, 4] * 4
    assert records[3]["captions"][0]["caption"] == "dark water of a small pond"


def test_worker_errors_keep_their_type_and_message(client, tmp_path):
    from tilescribe.plugin.worker.client import WorkerError

    with pytest.raises(WorkerError) as caught:
        client.request("info", db=str(tmp_path / "none.tilescribe.sqlite"))
    assert caught.value.kind == "IndexFileError"
    assert str(caught.value).startswith(f"Index file not found: {tmp_path / 'none.tilescribe.sqlite'}")
    assert client.running()  # one bad request does not cost the worker


def test_a_crash_during_a_request_is_reported_and_the_next_use_restarts(client, captioned_index):
    from tilescribe.plugin.worker.client import WorkerCrashed

    db = str(captioned_index.with_name("neon.tilescribe.sqlite"))
    first = client.hello()["pid"]
    errors = []

    def search():  # loading the embedder keeps the worker busy for seconds
        try:
            client.request("search", db=db, query="a pond", k=2)
        except WorkerCrashed as exc:
            errors.append(exc)

    thread = threading.Thread(target=search)
    thread.start()
    time.sleep(0.3)
    os.kill(first, signal.SIGKILL)
    thread.join(30)
    [error] = errors
    assert "stopped unexpectedly (killed by SIGKILL (killed from outside" in str(error)
    assert "during 'search'" in str(error)
    assert client.hello()["pid"] != first  # restarted on the next use
    assert client.request("info", db=db)["runs"][0]["tiles"]["done"] == 4


def test_a_native_crash_while_indexing_names_the_signal_the_tile_and_the_repair(client, rgb_raster, tmp_path):
    """What the user sees when llama.cpp kills the worker (SIGILL: a build for another CPU), and
    that indexing again resumes from the tiles already committed."""
    from tilescribe.plugin.worker.client import WorkerCrashed

    db = str(tmp_path / "crash.tilescribe.sqlite")
    pid = client.hello()["pid"]
    events = []

    def crash_after_first_tile(kind, data):
        events.append(kind)
        if kind == "progress" and data.get("finished") == 1:
            os.kill(pid, signal.SIGILL)

    with pytest.raises(WorkerCrashed) as caught:
        client.request("index", db=db, raster=str(rgb_raster), captioner={"test_model": True}, tile_size=50,
                       overlap=0, variants=1, timeout=120, on_event=crash_after_first_tile)
    text = str(caught.value)
    assert "killed by SIGILL (an instruction this CPU does not have" in text
    assert "during 'index', after tile " in text and "(1 of 24 tiles finished)" in text
    assert "Set up TileScribe > Repair" in text and "indexing again resumes" in text
    resumed = client.request("index", db=db, raster=str(rgb_raster), captioner={"test_model": True}, tile_size=50,
                             overlap=0, variants=1, timeout=120)
    assert resumed["done"] == 24 and resumed["captioned_now"] < 24  # what was committed before the crash stayed


def test_stop_ends_waiting_requests_and_the_process(client, captioned_index):
    from tilescribe.plugin.worker.client import WorkerStopped

    db = str(captioned_index.with_name("neon.tilescribe.sqlite"))
    client.hello()
    process = client._process.popen
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_catch(client, db)))
    thread.start()
    time.sleep(0.3)
    client.stop()
    thread.join(30)
    assert process.poll() is not None and not client.running()
    assert outcome and isinstance(outcome[0], (WorkerStopped, list))  # stopped, or answered just before


def _catch(client, db):
    from tilescribe.plugin.worker.client import WorkerError

    try:
        return client.request("search", db=db, query="a pond", k=2)
    except WorkerError as exc:
        return exc
