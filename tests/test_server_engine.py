"""The managed llama-server engine: real llama-server (built by setup) running the tiny pair."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from helpers import in_process_cli
from rasters import write_raster
from tilescribe.plugin.core.captioning.llama_server import find_llama_server
from tilescribe.plugin.core.errors import EngineError, ModelError

pytestmark = pytest.mark.slow
SHORT = 16


def _server_or_skip():
    try:
        return find_llama_server()
    except ModelError as exc:
        pytest.skip(f"no llama-server: {exc}")


@pytest.fixture
def server_captioner(tiny_pair):
    _server_or_skip()
    from tilescribe.plugin.core.captioning.server_engine import LlamaServerCaptioner

    captioner = LlamaServerCaptioner(*tiny_pair, slots=2, max_len=SHORT, n_variants=3)
    yield captioner
    captioner.close()


def test_captions_a_tile_through_its_own_server(server_captioner, tile_png):
    result = server_captioner.caption(tile_png, 3)
    assert len(result.variants) == 3
    record = server_captioner.describe()
    assert record["engine"] == "llama-server" and record["settings"]["slots"] == 2
    assert server_captioner.server.api_key not in json.dumps(record)


def test_the_server_listens_on_loopback_and_wants_its_random_key(server_captioner):
    url = server_captioner.server.url
    assert url.startswith("http://127.0.0.1:")
    anonymous = urllib.request.Request(url + "/v1/models")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(anonymous, timeout=10)
    assert refused.value.code == 401


def test_a_server_that_dies_is_restarted_once_then_the_run_ends(server_captioner, tile_png):
    server = server_captioner.server
    first_key = server.api_key
    server.process.kill()
    server.process.wait()
    assert len(server_captioner.caption(tile_png, 3).variants) == 3  # restarted, new port and key
    assert server.starts == 2 and server.api_key != first_key
    server.process.kill()
    server.process.wait()
    with pytest.raises(EngineError, match="stopped again"):
        server_captioner.caption(tile_png, 3)


def test_a_native_crash_of_the_server_names_the_signal_and_the_repair(server_captioner, tile_png):
    """llama.cpp killed by SIGILL twice (a build for another CPU): the user reads which signal and what to do."""
    server = server_captioner.server
    for _ in range(2):
        server.process.send_signal(signal.SIGILL)
        server.process.wait()
        if server.starts == 1:
            assert len(server_captioner.caption(tile_png, 3).variants) == 3  # the first crash: restarted
    with pytest.raises(EngineError) as caught:
        server_captioner.caption(tile_png, 3)
    text = str(caught.value)
    assert "killed by SIGILL (an instruction this CPU does not have" in text
    assert "Set up TileScribe > Repair (the TileScribe dock, or Raster > TileScribe > Settings); from a checkout, " \
        "make setup" in text


def test_closing_stops_the_server(server_captioner):
    process = server_captioner.server.process
    server_captioner.close()
    assert process.poll() is not None


def test_a_killed_parent_never_leaves_the_server_behind(tiny_pair, tmp_path):
    _server_or_skip()
    script = (
        "import sys, time\n"
        "from tilescribe.plugin.core.captioning.server_engine import LlamaServerCaptioner\n"
        f"c = LlamaServerCaptioner({str(tiny_pair[0])!r}, {str(tiny_pair[1])!r}, slots=1, max_len=16)\n"
        "print(c.server.process.pid, flush=True)\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        if not _running(server_pid):
            break
        time.sleep(0.1)
    assert not _running(server_pid), "llama-server outlived the process that started it"


def test_index_command_with_the_server_engine(tmp_path, tiny_pair, monkeypatch, capsys, hashing_embedder):
    _server_or_skip()
    cli_run = in_process_cli(monkeypatch, capsys, hashing_embedder)
    data = np.random.default_rng(1).integers(1, 250, size=(3, 64, 128)).astype("uint8")
    raster = write_raster(tmp_path / "r.tif", width=128, height=64, data=data)
    code, out, err = cli_run("index", str(raster), "--model", str(tiny_pair[0]), "--mmproj", str(tiny_pair[1]),
                             "--engine", "server", "--slots", "2", "--tile-size", "64", "--variants", "2")
    assert "captioning with llama-server" in err and "2 slots, CPU" in err
    assert "of 2 tiles captioned" in err and code in (0, 1), err  # random weights may write invalid answers


def test_a_missing_llama_server_says_how_to_get_one(tiny_pair, monkeypatch, tmp_path):
    from tilescribe.plugin.core.captioning.server_engine import LlamaServerCaptioner

    with pytest.raises(ModelError, match=r"does not exist or cannot be run.*--llama-server"):
        LlamaServerCaptioner(*tiny_pair, llama_server=str(tmp_path / "nope"), max_len=SHORT)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: only its parent must reap it
        return stat.read().split()[2] != "Z"


def test_three_llama_servers_share_a_run_and_one_killed_mid_run_loses_nothing(tmp_path, tiny_pair, hashing_embedder):
    from tilescribe.plugin.core.captioning.http_backend import OpenAICompatibleCaptioner
    from tilescribe.plugin.core.captioning.llama_server import LlamaServer, ServerOptions
    from tilescribe.plugin.core.indexing.indexer import IndexSettings, index_raster
    from tilescribe.plugin.core.index.store import Store

    from tilescribe.plugin.core.captioning.gguf_header import read_gguf_info
    from tilescribe.plugin.core.captioning.llama_backend import plan_model_context

    binary = _server_or_skip()
    key = "three-servers-test-key"
    plan = plan_model_context(read_gguf_info(tiny_pair[0], "model"), read_gguf_info(tiny_pair[1], "mmproj"),
                              None, {"one_sentence": SHORT, "feature": SHORT, "caption": SHORT}, 2)
    servers = [LlamaServer(binary, ServerOptions(*tiny_pair, slots=1, ctx_per_slot=plan.n_ctx), api_key=key).start()
               for _ in range(3)]
    data = np.random.default_rng(4).integers(1, 250, size=(3, 96, 128)).astype("uint8")
    raster = write_raster(tmp_path / "twelve-tiles.tif", width=128, height=96, data=data)
    captioner = OpenAICompatibleCaptioner([s.url for s in servers], "tiny", api_key=key, parallel_requests=1,
                                          max_len=SHORT, max_tokens=plan.max_tokens, max_retries=1, backoff_s=0.1,
                                          timeout_s=60)

    def kill_the_second_after_three_tiles(progress):
        if progress.finished == 3 and servers[1].alive():
            servers[1].process.kill()

    try:
        with Store(tmp_path / "i.tilescribe.sqlite", create=True) as store:
            report = index_raster(store, captioner, hashing_embedder, str(raster),
                                  IndexSettings(tile_size=32, variants=2), progress=kill_the_second_after_three_tiles)
            counts = store.tile_counts(report.run_id)
            per_tile = store._conn.execute(
                "select count(c.id) from tiles t left join captions c on c.tile_id = t.id"
                " where t.status = 'done' group by t.id").fetchall()
    finally:
        for server in servers:
            server.close()
    assert not servers[1].alive()
    assert counts["pending"] == 0 and counts["done"] + counts["failed"] == 12
    assert counts["done"] >= 9 and all(n == 2 for (n,) in per_tile), report.failures  # each done tile once
    assert all("refused" not in reason.lower() for _, reason in report.failures)
