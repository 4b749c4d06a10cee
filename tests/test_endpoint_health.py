"""Issue 22: several endpoints: one serving another model, or answering with fewer variants, loses its share."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fixtures_server import Reply, Seen, completion, variants_asked

from tilescribe.plugin.core.captioning.http_backend import OpenAICompatibleCaptioner
from tilescribe.plugin.core.errors import CaptionError


def answering(delay_s: float = 0.05, short_by: int = 0):
    def reply(seen: Seen) -> Reply:
        return Reply(200, completion(max(1, variants_asked(seen) - short_by), tag=f"{id(seen)}-"), delay_s=delay_s)
    return reply


def captioner(urls, **settings) -> OpenAICompatibleCaptioner:
    return OpenAICompatibleCaptioner(urls, "tiny-vlm", **{"backoff_s": 0.01, "timeout_s": 5, "max_retries": 2,
                                                          "parallel_requests": 2, **settings})


def _caption_all(cap, tile_png, n=24):
    def one(_):
        try:
            return cap.caption(tile_png, 3)
        except CaptionError as exc:
            return exc
    with ThreadPoolExecutor(max_workers=cap.parallel_requests) as pool:
        return list(pool.map(one, range(n)))


def test_an_endpoint_answering_with_fewer_variants_loses_its_share_and_is_named(scripted_servers, tile_png):
    good, short = scripted_servers(), scripted_servers()
    good.script = answering(0.05)
    short.script = answering(0.0, short_by=1)  # fast, valid JSON, one variant short: it would win every race
    cap = captioner([good.url, short.url])
    results = _caption_all(cap, tile_png)
    assert [r for r in results if isinstance(r, Exception)] == []  # no good tile fails while a good server is up
    stats = {s["url"]: s for s in cap.stats()}
    gone = stats[short.url]["gone"]
    assert gone and short.url in gone and "failed validation" in gone and good.url not in gone
    assert stats[short.url]["invalid"] <= 6 and stats[good.url]["gone"] is None


def test_a_tile_failure_names_the_server_whose_answers_failed(scripted_servers, tile_png):
    server = scripted_servers()
    server.script = answering(0.0, short_by=1)
    cap = captioner([server.url], max_attempts=2)
    with pytest.raises(CaptionError) as failed:
        cap.caption(tile_png, 3)
    assert f"(from {server.url})" in str(failed.value)


def test_an_endpoint_serving_another_model_is_left_out_before_any_tile(scripted_servers, tile_png):
    right, wrong = scripted_servers(), scripted_servers()
    right.script = wrong.script = answering(0.0)
    right.models, wrong.models = ["tiny-vlm"], ["some-other-model"]
    cap = captioner([right.url, wrong.url])
    results = _caption_all(cap, tile_png, 8)
    assert all(not isinstance(r, Exception) for r in results)
    assert wrong.seen == [] and len(right.seen) == 8
    gone = {s["url"]: s["gone"] for s in cap.stats()}[wrong.url]
    assert gone and "serves some-other-model, not tiny-vlm" in gone and wrong.url in gone
