"""The OpenAI-compatible HTTP captioner against a real llama_cpp.server and a misbehaving one."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fixtures_server import Reply, completion

from tilescribe.plugin.core.captioning.base import CaptionResult
from tilescribe.plugin.core.captioning.http_backend import OpenAICompatibleCaptioner, redact_url
from tilescribe.plugin.core.captioning.prompt import PROMPT_VERSION
from tilescribe.plugin.core.errors import CaptionError, ModelError

KEY_ENV = "TILESCRIBE_TEST_API_KEY"
SECRET = "sk-test-5ecret-do-not-leak"
FAST = {"backoff_s": 0.01, "timeout_s": 5}  # back-off in tests: milliseconds, not seconds


OK = Reply(200, completion(2))


def captioner(url: str, **settings) -> OpenAICompatibleCaptioner:
    return OpenAICompatibleCaptioner(url, "tiny-vlm", **{**FAST, **settings})


# --- a real llama_cpp.server with the tiny random pair --------------------------------------

@pytest.mark.slow
def test_real_server_answers_through_the_whole_http_path(llama_server, tile_png):
    cap = captioner(llama_server, max_len=40, timeout_s=60, max_attempts=2)
    try:
        result = cap.caption(tile_png, 1)
    except CaptionError as err:  # random weights may write junk even under the grammar
        assert "valid captions in 2 attempts" in str(err) and "HTTP" not in str(err)
    else:
        assert len(result.variants) == 1 and result.raw.strip() and result.completion_tokens > 0
    # llama_cpp.server rejects json_schema with a 500 naming response_format, takes json_object.
    assert cap.describe()["response_format"] == "json_object"
    raw, tokens, _ = cap._generate(tile_png, 1, 0)  # the answer itself: status 200, text, usage, endpoint
    assert raw.strip().startswith("{") and tokens > 0


@pytest.mark.slow
def test_real_server_concurrent_captions_and_secrets_stay_out(llama_server, tile_png, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    url = llama_server.replace("http://", "http://tester:pa55word@") + "/v1/"
    cap = captioner(url, api_key_env=KEY_ENV, max_len=40, timeout_s=60, max_attempts=1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda _: _caption_or_error(cap, tile_png), range(4)))
    assert all(isinstance(o, (CaptionResult, CaptionError)) for o in outcomes), outcomes
    assert any(isinstance(o, CaptionResult) for o in outcomes) or all(
        "HTTP" not in str(o) for o in outcomes)
    record = json.dumps(cap.describe())
    assert SECRET not in record and "pa55word" not in record and "tester" not in record
    assert cap.describe()["url"] == llama_server.replace("http://", "http://***@") + "/v1/"
    assert cap.describe()["prompt_version"] == PROMPT_VERSION


def _caption_or_error(cap, png):
    try:
        return cap.caption(png, 1)
    except CaptionError as err:
        return err


# --- a scripted server: what each answer does ---------------------------------------------

@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
def test_sends_prompt_image_and_schema_to_the_chat_endpoint(scripted_server, tile_png, suffix):
    scripted_server.script = [OK]
    result = captioner(scripted_server.url + suffix).caption(tile_png, 2)
    assert [v.one_sentence for v in result.variants] == ["fields and a road 0", "fields and a road 1"]
    assert result.completion_tokens == 42 and result.attempts == 1
    (seen,) = scripted_server.seen
    assert seen.path == "/v1/chat/completions" and seen.body["model"] == "tiny-vlm"
    parts = {p["type"]: p for p in seen.body["messages"][0]["content"]}
    uri = parts["image_url"]["image_url"]["url"]
    assert base64.b64decode(uri.removeprefix("data:image/png;base64,")) == tile_png
    assert "Write 2 different descriptions" in parts["text"]["text"]
    fmt = seen.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["properties"]["variants"]["minItems"] == 2
    assert "Authorization" not in seen.headers


def test_a_slow_server_times_out_and_the_retry_succeeds(scripted_server, tile_png):
    scripted_server.script = [Reply(200, completion(1), delay_s=6), Reply(200, completion(1))]
    started = time.monotonic()
    result = captioner(scripted_server.url, timeout_s=0.3).caption(tile_png, 1)
    assert len(result.variants) == 1 and len(scripted_server.seen) == 2
    assert time.monotonic() - started < 4  # it gave up waiting, it did not sit the 6 s out


def test_a_server_that_never_answers_in_time_gives_a_clear_error(scripted_server, tile_png):
    scripted_server.script = [Reply(200, completion(1), delay_s=1.0)]
    with pytest.raises(ModelError, match=r"failed 2 times.*timeout_s=0.2") as err:
        captioner(scripted_server.url, timeout_s=0.2, max_retries=1).caption(tile_png, 1)
    assert scripted_server.url in str(err.value)


def test_500s_are_retried_until_the_server_recovers(scripted_server, tile_png):
    scripted_server.script = [Reply(500, "overloaded"), Reply(503, "busy"), Reply(200, completion(1))]
    result = captioner(scripted_server.url, max_retries=4).caption(tile_png, 1)
    assert len(result.variants) == 1 and len(scripted_server.seen) == 3
    assert result.attempts == 1  # transport retries do not use up caption attempts


def test_500s_forever_stop_with_a_model_error_after_max_retries(scripted_server, tile_png):
    scripted_server.script = [Reply(500, {"error": {"message": "CUDA out of memory"}})]
    with pytest.raises(ModelError, match=r"failed 3 times.*HTTP 500: 'CUDA out of memory'.*server's log"):
        captioner(scripted_server.url, max_retries=2).caption(tile_png, 1)
    assert len(scripted_server.seen) == 3


def test_429_waits_as_told_and_retries(scripted_server, tile_png):
    scripted_server.script = [Reply(429, "slow down", {"Retry-After": "0.2"}), Reply(200, completion(1))]
    started = time.monotonic()
    result = captioner(scripted_server.url).caption(tile_png, 1)
    assert len(result.variants) == 1 and len(scripted_server.seen) == 2
    assert time.monotonic() - started >= 0.2


def test_a_dropped_connection_is_retried(scripted_server, tile_png):
    scripted_server.script = [Reply(None), Reply(200, completion(1))]
    result = captioner(scripted_server.url).caption(tile_png, 1)
    assert len(result.variants) == 1 and len(scripted_server.seen) == 2


def test_a_malformed_json_body_is_a_retried_caption_failure_with_a_new_seed(scripted_server, tile_png):
    scripted_server.script = [Reply(200, '{"choices": [{"message": {"content": "{\\"vari'),
                              Reply(200, completion(1))]
    result = captioner(scripted_server.url, seed=7).caption(tile_png, 1)
    assert result.attempts == 2 and "not JSON" in result.failures[0]
    assert [s.body["seed"] for s in scripted_server.seen] == [7, 8]


def test_answers_without_choices_end_in_a_caption_error(scripted_server, tile_png):
    scripted_server.script = [Reply(200, {"object": "chat.completion", "error": "model busy"})]
    with pytest.raises(CaptionError, match=r"in 2 attempts.*no choices\[0\]\.message: 'model busy'"):
        captioner(scripted_server.url, max_attempts=2).caption(tile_png, 1)


def test_an_html_page_is_not_an_api(scripted_server, tile_png):
    scripted_server.script = [Reply(200, "<!doctype html><html><title>Login</title></html>",
                                    {"Content-Type": "text/html"})]
    with pytest.raises(ModelError, match=r"web page.*Login.*OpenAI-compatible"):
        captioner(scripted_server.url).caption(tile_png, 1)
    assert len(scripted_server.seen) == 1  # asking again would give the same page


def test_401_names_the_key_variable_and_never_shows_the_key(scripted_server, tile_png, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    # Some servers echo the key they refused: it must not reach the message.
    scripted_server.script = [Reply(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})]
    cap = captioner(scripted_server.url, api_key_env=KEY_ENV)
    with pytest.raises(ModelError, match=rf"HTTP 401.*environment variable {KEY_ENV}") as err:
        cap.caption(tile_png, 1)
    assert SECRET not in str(err.value) and SECRET not in json.dumps(cap.describe())
    assert scripted_server.seen[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert cap.describe()["api_key_env"] == KEY_ENV


def test_a_key_variable_that_is_not_set_is_named(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ModelError, match=rf"environment variable {KEY_ENV}.*not set"):
        captioner("http://127.0.0.1:9/v1", api_key_env=KEY_ENV)


def test_403_without_a_key_says_how_to_give_one(scripted_server, tile_png):
    scripted_server.script = [Reply(403, "forbidden")]
    with pytest.raises(ModelError, match=r"HTTP 403.*api_key_env"):
        captioner(scripted_server.url).caption(tile_png, 1)


def test_404_names_the_model(scripted_server, tile_png):
    scripted_server.script = [Reply(404, {"error": {"message": "model 'tiny-vlm' not found"}})]
    with pytest.raises(ModelError, match=r"404.*'tiny-vlm' is not served there.*/v1/models"):
        captioner(scripted_server.url).caption(tile_png, 1)


def test_a_server_that_is_down_fails_at_once_with_how_to_start_one(closed_port, tile_png):
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"connection refused\. Is the server running\? .*llama_cpp\.server"):
        captioner(f"http://127.0.0.1:{closed_port}/v1", backoff_s=5.0).caption(tile_png, 1)
    assert time.monotonic() - started < 3.0  # no back-off (5 s): nobody is listening


def test_a_rejected_response_format_falls_back_and_is_remembered(scripted_server, tile_png):
    scripted_server.script = [
        Reply(400, {"error": {"message": "'response_format' of type 'json_schema' is not supported"}}),
        Reply(200, completion(1)),
    ]
    cap = captioner(scripted_server.url)
    cap.caption(tile_png, 1)
    cap.caption(tile_png, 1)
    types = [s.body["response_format"]["type"] for s in scripted_server.seen]
    assert types == ["json_schema", "json_object", "json_object"]
    assert scripted_server.seen[1].body["response_format"]["schema"]["required"] == ["variants"]
    assert cap.describe()["response_format"] == "json_object"


def test_a_server_that_takes_no_response_format_gets_none(scripted_server, tile_png):
    # llama_cpp.server answers an unknown format type with a 500: not retried, stepped down.
    scripted_server.script = [Reply(500, "Input should be 'text' or 'json_object' (response_format)"),
                              Reply(400, "response_format.schema: unknown field"), Reply(200, completion(1))]
    captioner(scripted_server.url, max_retries=0).caption(tile_png, 1)
    assert "response_format" not in scripted_server.seen[2].body
    scripted_server.seen.clear()
    captioner(scripted_server.url, json_schema=False).caption(tile_png, 1)
    assert "response_format" not in scripted_server.seen[0].body


def test_a_redirect_is_not_followed(scripted_server, tile_png, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    scripted_server.script = [Reply(307, "", {"Location": "http://127.0.0.1:9/elsewhere"})]
    with pytest.raises(ModelError, match=r"redirects \(HTTP 307\)"):
        captioner(scripted_server.url, api_key_env=KEY_ENV).caption(tile_png, 1)
    assert len(scripted_server.seen) == 1


def test_url_credentials_are_sent_as_basic_auth_and_redacted(scripted_server, tile_png):
    url = scripted_server.url.replace("http://", "http://user:hunter2@") + "/v1"
    scripted_server.script = [Reply(500, "down")]
    cap = captioner(url, max_retries=0)
    with pytest.raises(ModelError) as err:
        cap.caption(tile_png, 1)
    assert "hunter2" not in str(err.value) and "hunter2" not in json.dumps(cap.describe())
    assert cap.describe()["url"] == scripted_server.url.replace("http://", "http://***@") + "/v1"
    expected = base64.b64encode(b"user:hunter2").decode()
    assert scripted_server.seen[0].headers["Authorization"] == f"Basic {expected}"


def test_redact_url_hides_credentials_and_secret_parameters():
    url = "https://me:pw@api.example.org:8443/openai/v1?api-version=2024-06&api_key=abc&sig=x#frag"
    assert redact_url(url) == "https://***@api.example.org:8443/openai/v1?api-version=2024-06&api_key=***&sig=***"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host/v1", "http:///v1"])
def test_a_url_that_is_not_http_is_refused(url):
    with pytest.raises(ModelError, match="not an http"):
        captioner(url)


def test_concurrent_captions_overlap_and_all_succeed(scripted_server, tile_png):
    scripted_server.script = [Reply(200, completion(1), delay_s=0.2)]
    cap = captioner(scripted_server.url, parallel_requests=4)
    with ThreadPoolExecutor(max_workers=cap.parallel_requests) as pool:
        results = list(pool.map(lambda _: cap.caption(tile_png, 1), range(8)))
    assert all(len(r.variants) == 1 for r in results)
    # The server sees them overlap; the captioner never has more than 4 in flight (the server's
    # count may briefly read 5: it counts a request done only after its handler returns).
    assert scripted_server.max_in_flight >= 4 and cap.stats()[0]["peak"] == 4


def test_close_is_idempotent_and_stops_captioning(scripted_server, tile_png):
    cap = captioner(scripted_server.url)
    cap.close()
    cap.close()
    with pytest.raises(ModelError, match="closed"):
        cap.caption(tile_png, 1)
    assert scripted_server.seen == []
