"""Several captioning servers share the tiles: one dying hands its tiles to the others."""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixtures_server import Reply, Seen, completion, variants_asked
from helpers import in_process_cli
from index_checks import index_state
from rasters import write_raster

from tilescribe.plugin.cli.index_command import captioner_settings
from tilescribe.plugin.cli.main import build_parser
from tilescribe.plugin.core.captioning.factory import CaptionerSettings, make_captioner
from tilescribe.plugin.core.captioning.http_backend import OpenAICompatibleCaptioner
from tilescribe.plugin.core.captioning.http_transport import Target
from tilescribe.plugin.core.errors import EngineError, ModelError
from tilescribe.plugin.core.indexing.indexer import IndexSettings, index_raster
from tilescribe.plugin.core.index.store import Store

SETTINGS = IndexSettings(tile_size=32, variants=2)  # 6 x 4 = 24 tiles


def answering(delay_s: float = 0.02):
    """A script giving every request a valid answer with as many variants as it asks for."""
    def reply(seen: Seen) -> Reply:
        return Reply(200, completion(variants_asked(seen), tag=f"{id(seen)}-"), delay_s=delay_s)
    return reply


def kill_after(server, requests: int):
    """Answers normally, and kills the server (in another thread) once it has seen `requests`."""
    answer = answering()

    def reply(seen: Seen) -> Reply:
        if len(server.seen) == requests:
            threading.Thread(target=server.kill, daemon=True).start()
        return answer(seen)
    return reply


def captioner(urls, **settings) -> OpenAICompatibleCaptioner:
    return OpenAICompatibleCaptioner(urls, "tiny-vlm", **{"backoff_s": 0.01, "timeout_s": 5,
                                                          "max_retries": 2, **settings})


def test_tiles_are_spread_over_every_server(scripted_servers, tile_png):
    servers = [scripted_servers() for _ in range(3)]
    for server in servers:
        server.script = answering(0.05)
    cap = captioner([s.url for s in servers], parallel_requests=2)
    assert cap.parallel_requests == 6  # the total in flight: what the indexer sizes its threads by
    with ThreadPoolExecutor(max_workers=cap.parallel_requests) as pool:
        results = list(pool.map(lambda _: cap.caption(tile_png, 2), range(18)))
    assert all(len(r.variants) == 2 for r in results)
    assert all(len(s.seen) >= 3 for s in servers), [len(s.seen) for s in servers]
    assert sum(len(s.seen) for s in servers) == 18
    assert [s["peak"] for s in cap.stats()] == [2, 2, 2]  # the limit per server, reached, never passed


def test_a_server_killed_mid_run_hands_its_tiles_to_the_others(scripted_servers, tmp_path, hashing_embedder):
    servers = [scripted_servers() for _ in range(3)]
    servers[0].script, servers[2].script = answering(), answering()
    servers[1].script = kill_after(servers[1], 3)
    raster = write_raster(tmp_path / "r.tif", width=192, height=128)
    db = tmp_path / "r.tilescribe.sqlite"
    cap = captioner([s.url for s in servers], parallel_requests=2)
    with Store(db, create=True) as store:
        report = index_raster(store, cap, hashing_embedder, str(raster), SETTINGS)
    assert report.failures == [] and report.progress.done == 24
    state = index_state(db, SETTINGS.variants)  # every done tile has exactly 2 captions and vectors
    assert [status for status, _, _ in state.values()] == ["done"] * 24
    stats = {s["url"]: s for s in cap.stats()}
    assert stats[servers[1].url]["gone"] and "failed 3 times in a row" in stats[servers[1].url]["gone"]
    assert sum(s["answered"] for s in stats.values()) == 24  # each tile captioned once


def test_when_every_server_is_gone_the_run_ends_and_keeps_its_tiles(scripted_servers, tmp_path, hashing_embedder):
    servers = [scripted_servers() for _ in range(2)]
    for server, after in zip(servers, (4, 6)):
        server.script = kill_after(server, after)
    raster = write_raster(tmp_path / "r.tif", width=192, height=128)
    db = tmp_path / "r.tilescribe.sqlite"
    with Store(db, create=True) as store:
        with pytest.raises(EngineError, match=r"All 2 captioning servers left the run: .*failed 3 times.*\| "
                                              r".*failed 3 times.*Tiles captioned so far are kept"):
            index_raster(store, captioner([s.url for s in servers]), hashing_embedder, str(raster), SETTINGS)
    state = index_state(db, SETTINGS.variants)
    assert 0 < sum(status == "done" for status, _, _ in state.values()) < 24
    assert {status for status, _, _ in state.values()} <= {"done", "pending"}  # none failed for it


def test_a_server_down_from_the_start_is_left_out(scripted_servers, closed_port, tile_png):
    server = scripted_servers()
    server.script = answering()
    cap = captioner([f"http://127.0.0.1:{closed_port}/v1", server.url])
    assert all(len(cap.caption(tile_png, 1).variants) == 1 for _ in range(4))
    assert "connection refused. Is the server running?" in cap.stats()[0]["gone"]


def test_every_server_down_from_the_start_is_a_setting_error(closed_port, tile_png):
    cap = captioner([f"http://127.0.0.1:{closed_port}/v1", f"http://localhost:{closed_port}"])
    with pytest.raises(ModelError, match=r"All 2 .*connection refused.*\|.*connection refused") as err:
        cap.caption(tile_png, 1)
    assert not isinstance(err.value, EngineError)  # nothing was ever reached: check the URLs


def test_the_run_record_is_the_same_whichever_servers_answer(scripted_servers, monkeypatch):
    one = captioner("http://127.0.0.1:9/v1").describe()
    three = captioner("http://127.0.0.1:9/v1 http://10.0.0.2:8080 https://gpu.example.org/v1").describe()
    assert {k for k in one if one[k] != three[k]} == {"url", "endpoint"}
    assert one["settings"] == three["settings"]


def test_an_api_key_given_directly_is_sent_and_never_recorded(scripted_server, tile_png):
    key = "per-start-key-9f8e7d6c"
    scripted_server.script = [Reply(401, {"error": {"message": f"bad key {key}"}})]
    cap = captioner(scripted_server.url, api_key=key)
    with pytest.raises(ModelError, match="HTTP 401") as err:
        cap.caption(tile_png, 1)
    assert scripted_server.seen[0].headers["Authorization"] == f"Bearer {key}"
    assert key not in str(err.value) and key not in json.dumps(cap.describe())


def test_settings_take_a_list_of_servers_and_a_timeout_and_round_trip():
    settings = CaptionerSettings(server_url=["http://a:1/v1", "http://b:2"], server_model="m", timeout_s=7.5)
    assert settings.server_url == ("http://a:1/v1", "http://b:2")
    assert CaptionerSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    single = CaptionerSettings(server_url="http://a:1/v1", server_model="m")
    assert CaptionerSettings.from_dict(single.to_dict()) == single and single.timeout_s == 120
    cap = make_captioner(settings)
    assert (cap.parallel_requests, cap.timeout_s, cap.urls) == (8, 7.5, ["http://a:1/v1", "http://b:2"])


def test_the_command_line_takes_several_servers_and_a_timeout(tmp_path: Path):
    args = build_parser().parse_args(["index", "r.tif", "--server", "http://a:1/v1", "http://b:2",
                                      "--server-model", "m", "--timeout", "30", "--parallel", "2"])
    settings = captioner_settings(args)
    assert settings.server_url == ("http://a:1/v1", "http://b:2") and settings.timeout_s == 30
    args = build_parser().parse_args(["index", "r.tif", "--server", "http://a:1/v1", "--server-model", "m"])
    assert captioner_settings(args).server_url == "http://a:1/v1"  # one server: a plain string, as before


@pytest.mark.parametrize("value", ["0", "abc", "-1", "inf"])
def test_a_bad_timeout_is_refused_by_the_command_line(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["index", "r.tif", "--server", "http://a:1/v1", "--timeout", value])
    assert exit_info.value.code == 2 and "--timeout" in capsys.readouterr().err


def test_a_host_name_that_does_not_resolve_is_left_out_or_named(scripted_server, tile_png):
    scripted_server.script = answering()
    cap = captioner(["http://no-such-host.invalid:8080/v1", scripted_server.url])
    assert all(len(cap.caption(tile_png, 1).variants) == 1 for _ in range(3))
    assert "Cannot find the captioning server http://no-such-host.invalid:8080/v1" in cap.stats()[0]["gone"]
    with pytest.raises(ModelError, match=r"Cannot find the captioning server .*Check the host name"):
        captioner("http://no-such-host.invalid/v1").caption(tile_png, 1)


def test_a_remote_server_is_reached_through_the_environment_proxy(scripted_server, tile_png, monkeypatch):
    # The scripted server plays the proxy: it gets the whole URL of a host it is not.
    monkeypatch.setenv("http_proxy", scripted_server.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    scripted_server.script = answering()
    assert len(captioner("http://gpu1.example.org:8080/v1").caption(tile_png, 1).variants) == 1
    assert scripted_server.seen[0].path == "http://gpu1.example.org:8080/v1/chat/completions"
    monkeypatch.setenv("no_proxy", "gpu1.example.org")
    assert Target.of("http://gpu1.example.org:8080/v1/chat/completions", {}).proxy is None
    assert Target.of("http://127.0.0.1:8080/v1/chat/completions", {}).proxy is None  # never for this machine


def test_several_servers_from_the_environment(monkeypatch):
    monkeypatch.setenv("TILESCRIBE_SERVER_URL", "http://a:1/v1  http://b:2")
    monkeypatch.setenv("TILESCRIBE_SERVER_MODEL", "m")
    cap = make_captioner(CaptionerSettings.from_environment())
    assert cap.urls == ["http://a:1/v1", "http://b:2"] and cap.parallel_requests == 8


def test_the_index_command_spreads_tiles_over_several_servers(scripted_servers, tmp_path, hashing_embedder,
                                                              monkeypatch, capsys):
    servers = [scripted_servers() for _ in range(2)]
    for server in servers:
        server.script = answering()
    raster = write_raster(tmp_path / "r.tif", width=192, height=128)
    cli = in_process_cli(monkeypatch, capsys, hashing_embedder)
    code, _, err = cli("index", raster, "--db", tmp_path / "r.tilescribe.sqlite", "--tile-size", 32,
                       "--variants", 2, "--server", servers[0].url, servers[1].url, "--server-model", "m",
                       "--parallel", 2, "--timeout", 10)
    assert code == 0, err
    assert "24 of 24 tiles captioned" in err and f"at {servers[0].url} {servers[1].url}" in err
    assert all(len(s.seen) >= 4 for s in servers) and sum(len(s.seen) for s in servers) == 24


def test_a_missing_model_name_is_asked_for_without_showing_a_password():
    settings = CaptionerSettings(server_url=("http://me:hunter22@a:1/v1", "http://b:2"))
    with pytest.raises(ModelError, match=r"ask http://\*\*\*@a:1/v1 http://b:2 for \(--server-model\)") as err:
        make_captioner(settings)
    assert "hunter22" not in str(err.value)


def test_each_servers_password_is_sent_to_it_alone_and_never_shown(scripted_servers, tile_png):
    servers = [scripted_servers() for _ in range(2)]
    for server, password in zip(servers, ("first-pa55word", "second-pa55word")):
        server.script = [Reply(500, {"error": {"message": f"no database for {password}"}})]
    urls = [s.url.replace("http://", f"http://u{i}:{p}@") for i, (s, p) in
            enumerate(zip(servers, ("first-pa55word", "second-pa55word")))]
    cap = captioner(urls, max_retries=0)
    with pytest.raises(EngineError) as err:
        cap.caption(tile_png, 1)
    shown = str(err.value) + json.dumps(cap.describe())
    assert "pa55word" not in shown and shown.count("***") >= 4
    for i, server in enumerate(servers):
        expected = base64.b64encode(f"u{i}:{('first', 'second')[i]}-pa55word".encode()).decode()
        assert {s.headers["Authorization"] for s in server.seen} == {f"Basic {expected}"}
