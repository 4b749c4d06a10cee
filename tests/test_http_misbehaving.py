"""The HTTP captioner against servers that refuse tiles, send junk, trickle, never stop or hang."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest
from fixtures_server import Reply, completion
from index_checks import index_state
from rasters import write_raster

from tilescribe.plugin.core.captioning.http_answers import lenient_count
from tilescribe.plugin.core.captioning.http_backend import REFUSALS_BEFORE_STOP, OpenAICompatibleCaptioner
from tilescribe.plugin.core.errors import CaptionError, Cancelled, EngineError, ModelError
from tilescribe.plugin.core.indexing.indexer import IndexSettings, index_raster
from tilescribe.plugin.core.index.store import Store

FAST = {"backoff_s": 0.01, "timeout_s": 5}


def captioner(url, **settings) -> OpenAICompatibleCaptioner:
    return OpenAICompatibleCaptioner(url, "tiny-vlm", **{**FAST, **settings})


# --- a refusal belongs to the tile ------------------------------------------------------------

@pytest.mark.parametrize("reply, words", [
    (Reply(400, {"error": {"message": "content filter: image rejected"}}),
     r"refused this tile \(HTTP 400: 'content filter"),
    (Reply(413, "Request Entity Too Large"), r"too large \(HTTP 413.*--tile-size"),
    (Reply(500, {"error": {"message": "failed to process image"}}), r"HTTP 500: 'failed to process image'"),
    (Reply(400, {"error": {"message": "This model's maximum context length is 4096 tokens. Please "
                                      "reduce the length of the messages or lower max_tokens."}}),
     r"does not fit the context.*max_tokens=7220 for 5 variants.*fewer --variants.*llama-server -c"),
])
def test_a_refused_tile_fails_alone_and_the_server_stays_in_use(scripted_server, tile_png, reply, words):
    scripted_server.script = [reply, Reply(200, completion(5))]
    cap = captioner(scripted_server.url)
    with pytest.raises(CaptionError, match=words) as err:
        cap.caption(tile_png, 5)
    assert not isinstance(err.value, ModelError)
    assert len(scripted_server.seen) == 1  # the same request again would be refused again
    assert len(cap.caption(tile_png, 5).variants) == 5  # the next tile goes on
    assert cap.stats()[0]["refused"] == 1 and cap.stats()[0]["gone"] is None


def test_a_server_refusing_every_tile_from_the_start_is_a_setting_error(scripted_server, tile_png):
    scripted_server.script = [Reply(400, {"error": {"message": "request rejected by policy"}})]
    cap = captioner(scripted_server.url)
    for _ in range(REFUSALS_BEFORE_STOP - 1):
        with pytest.raises(CaptionError, match="refused this tile"):
            cap.caption(tile_png, 1)
    with pytest.raises(ModelError, match=r"refused each of the first 8 tiles and captioned none; the last: "
                                         r".*request rejected by policy.*next run tries them again"):
        cap.caption(tile_png, 1)


def test_refusals_after_a_first_caption_stay_with_their_tiles(scripted_server, tile_png):
    scripted_server.script = [Reply(200, completion(1))] + [Reply(400, "content filter")] * 20
    cap = captioner(scripted_server.url)
    cap.caption(tile_png, 1)
    for _ in range(REFUSALS_BEFORE_STOP + 2):
        with pytest.raises(CaptionError) as err:
            cap.caption(tile_png, 1)
        assert not isinstance(err.value, ModelError)


def test_a_server_without_vision_is_a_setting_error(scripted_server, tile_png):
    scripted_server.script = [Reply(500, {"error": {"message": "image input is not supported by this server"}})]
    with pytest.raises(ModelError, match=r"cannot read images.*--mmproj"):
        captioner(scripted_server.url).caption(tile_png, 1)


@pytest.mark.parametrize("junk", ['"n/a"', "NaN", "1e400", "-5", "true", '{"n": 1}', "null", "Infinity"])
def test_junk_usage_counts_as_zero_tokens(scripted_server, tile_png, junk):
    body = json.dumps(completion(2)).replace('"completion_tokens": 42', f'"completion_tokens": {junk}')
    scripted_server.script = [Reply(200, body)]
    result = captioner(scripted_server.url).caption(tile_png, 2)
    assert len(result.variants) == 2 and result.completion_tokens == 0


def test_lenient_count_keeps_good_counts():
    assert [lenient_count(v) for v in (42, "17", 3.0, 10 ** 12, float("nan"), "n/a")] == [42, 17, 3, 0, 0, 0]


# --- bounded answers --------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [
    Reply(200, b'{"choices": [{"message": {"content": "' + b"x" * (30 << 20) + b'"}}]}'),
    Reply(200, b"", endless=True),
], ids=["30-MB-answer", "endless-chunked-answer"])
def test_an_oversized_answer_is_cut_at_the_limit_and_fails_the_tile(scripted_server, tile_png, reply):
    scripted_server.script = [reply, Reply(200, completion(1))]
    cap = captioner(scripted_server.url)
    tracemalloc.start()
    try:
        with pytest.raises(CaptionError, match=r"more than [\d,]+ bytes.*ignores the answer schema"):
            cap.caption(tile_png, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # read up to the limit, never the whole answer
    assert len(scripted_server.seen) == 1
    assert len(cap.caption(tile_png, 1).variants) == 1


def test_a_long_valid_answer_beyond_100000_characters_is_accepted(scripted_server, tile_png):
    n = 80  # 80 variants at their full length: about 112,000 characters
    variants = [{"one_sentence": f"{i:03d} " + "s" * 190, "feature": f"{i:03d} " + "f" * 390,
                 "caption": f"{i:03d} " + "c" * 790} for i in range(n)]
    body = completion(1)
    body["choices"][0]["message"]["content"] = json.dumps({"variants": variants})
    assert len(body["choices"][0]["message"]["content"]) > 100_000
    scripted_server.script = [Reply(200, body)]
    assert len(captioner(scripted_server.url).caption(tile_png, n).variants) == n


def test_an_endless_error_page_is_read_only_in_part(scripted_server, tile_png):
    scripted_server.script = [Reply(502, b"", endless=True)]
    with pytest.raises(EngineError, match=r"failed 2 times in a row \(last: HTTP 502"):
        captioner(scripted_server.url, max_retries=1).caption(tile_png, 1)


# --- waits that end ---------------------------------------------------------------------------

def test_a_trickling_answer_is_cut_at_the_total_deadline(scripted_server, tile_png):
    scripted_server.script = [Reply(200, completion(1), trickle_s=0.02), Reply(200, completion(1))]
    started = time.monotonic()
    result = captioner(scripted_server.url, timeout_s=0.5).caption(tile_png, 1)
    assert len(result.variants) == 1 and len(scripted_server.seen) == 2
    assert time.monotonic() - started < 5  # the trickle alone would take 10 s


@pytest.mark.parametrize("drop_after", [20, 60, 200], ids=["in-status-line", "in-headers", "in-body"])
def test_a_connection_dropped_mid_answer_is_retried(scripted_server, tile_png, drop_after):
    scripted_server.script = [Reply(200, completion(1), drop_after=drop_after), Reply(200, completion(1))]
    result = captioner(scripted_server.url).caption(tile_png, 1)
    assert len(result.variants) == 1 and len(scripted_server.seen) == 2
    assert result.attempts == 1 and result.failures == []  # a cut answer is not taken for the model's


def test_a_server_that_hangs_is_abandoned_counted_and_given_fewer_requests(scripted_server, tile_png):
    scripted_server.script = [Reply(200, completion(1), delay_s=30), Reply(200, completion(1))]
    cap = captioner(scripted_server.url, timeout_s=0.3, parallel_requests=4)
    assert len(cap.caption(tile_png, 1).variants) == 1
    (stats,) = cap.stats()
    assert stats["abandoned"] == 1 and stats["limit"] == 2 and stats["answered"] == 1


@pytest.mark.parametrize("reply", [Reply(200, completion(1), trickle_s=0.05),
                                   Reply(200, b"", endless=True, trickle_s=0.05),
                                   Reply(200, completion(1), delay_s=60)], ids=["trickle", "endless", "silent"])
def test_cancel_ends_requests_under_way_and_waiting_within_two_seconds(scripted_server, tile_png, reply):
    scripted_server.script = [reply]
    cap = captioner(scripted_server.url, timeout_s=60, parallel_requests=1)
    outcomes = []

    def caption():
        try:
            outcomes.append(cap.caption(tile_png, 1))
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes.append(exc)
    threads = [threading.Thread(target=caption, daemon=True) for _ in range(3)]  # 1 sent, 2 waiting
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    asked = time.monotonic()
    cap.cancel()
    for thread in threads:
        thread.join(timeout=5)
    assert time.monotonic() - asked < 2
    assert len(outcomes) == 3 and all(isinstance(o, Cancelled) for o in outcomes), outcomes
    with pytest.raises(Cancelled):
        cap.caption(tile_png, 1)


def test_a_one_at_a_time_server_answers_every_request_once(scripted_server, tile_png):
    # Like llama_cpp.server: 4 requests in flight, answered one after the other, each taking
    # most of the timeout. Queued requests wait; none is abandoned and sent again.
    scripted_server.serial = True
    scripted_server.script = [Reply(200, completion(1), delay_s=0.25)]
    cap = captioner(scripted_server.url, timeout_s=0.4, parallel_requests=4)
    with ThreadPoolExecutor(max_workers=cap.parallel_requests) as pool:
        results = list(pool.map(lambda _: cap.caption(tile_png, 1), range(10)))
    assert all(len(r.variants) == 1 for r in results)
    assert len(scripted_server.seen) == 10 and scripted_server.clients_gone == 0
    assert cap.stats()[0]["abandoned"] == 0


def test_timeout_setting_is_checked():
    with pytest.raises(ModelError, match="timeout_s must be a number"):
        captioner("http://127.0.0.1:9/v1", timeout_s=0)


def test_cancel_during_indexing_ends_the_run_at_once_and_keeps_committed_tiles(
        scripted_server, tmp_path, hashing_embedder):
    answered = []

    def script(seen):  # the first tiles are answered, then the server trickles
        answered.append(seen)
        return Reply(200, completion(2)) if len(answered) <= 6 else Reply(200, completion(2), trickle_s=0.05)
    scripted_server.script = script
    raster = write_raster(tmp_path / "r.tif", width=192, height=128)
    db = tmp_path / "r.tilescribe.sqlite"
    cap = captioner(scripted_server.url, timeout_s=60, parallel_requests=2)
    outcome = []

    def run():
        with Store(db, create=True) as store:
            try:
                index_raster(store, cap, hashing_embedder, str(raster), IndexSettings(tile_size=32, variants=2))
            except Cancelled as exc:
                outcome.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while len(answered) < 8:
        time.sleep(0.05)
    asked = time.monotonic()
    cap.cancel()  # what a second Ctrl-C does
    thread.join(timeout=10)
    assert time.monotonic() - asked < 2 and len(outcome) == 1
    state = index_state(db, 2)
    assert sum(status == "done" for status, _, _ in state.values()) >= 1  # committed tiles kept
    assert {status for status, _, _ in state.values()} <= {"done", "pending"}


def _timed(delay_s: float) -> dict:
    body = completion(1)
    body["timings"] = {"prompt_n": 300, "prompt_ms": 0.2 * delay_s * 1000, "predicted_ms": 0.8 * delay_s * 1000}
    return body


@pytest.mark.parametrize("serial, limit", [(True, 2), (False, 4)], ids=["one-slot", "four-slots"])
def test_the_limit_follows_what_the_server_says_it_sustains(scripted_server, tile_png, serial, limit):
    # llama-server reports the time it spent on each request: one slot serving 4 requests
    # in flight keeps 3 waiting in its queue; 2 in flight (1 served, 1 ready) is enough.
    scripted_server.serial = serial
    scripted_server.script = [Reply(200, _timed(0.1), delay_s=0.1)]
    cap = captioner(scripted_server.url, parallel_requests=4)
    with ThreadPoolExecutor(max_workers=cap.parallel_requests) as pool:
        results = list(pool.map(lambda _: cap.caption(tile_png, 1), range(24)))
    assert all(len(r.variants) == 1 for r in results)
    (stats,) = cap.stats()
    assert stats["limit"] == limit and stats["abandoned"] == 0, stats
