"""Issue 22: one malformed request line never ends the worker; every field is bounded; job ids are unique."""

from __future__ import annotations

import io
import json
import threading

import pytest

from tilescribe.plugin.worker.server import Worker


class Recorder(io.StringIO):
    def replies(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


def _serve(worker: Worker, lines) -> None:
    worker.serve(iter(lines))


BIG = "1" + "0" * 400  # an integer JSON parses, too large for a float


@pytest.mark.parametrize("line, message", [
    ('{"id": [1, 2], "cmd": "index", "db": "/tmp/x.sqlite", "raster": "/nope.tif"}', "request id"),
    ('{"id": {"a": 1}, "cmd": "hello"}', "request id"),
    ('{"id": 1e400, "cmd": "hello"}', "request id"),
    ('{"id": ' + BIG + ', "cmd": "hello"}', "request id"),
    ('{"id": 1, "cmd": "tile_at", "db": "/tmp/x.sqlite", "x": ' + BIG + ', "y": 0}', "field 'x' must be a finite"),
    ('{"id": 1, "cmd": "tile_at", "db": "/tmp/x.sqlite", "x": 1e400, "y": 0}', "field 'x' must be a finite"),
    ('{"id": 2, "cmd": "cancel", "target": [1]}', "field 'target' must be"),
    ('{"id": 2, "cmd": "cancel", "target": {"a": 1}}', "field 'target' must be"),
    ('{"id": 3, "cmd": "search", "db": "/tmp/x.sqlite", "query": "a", "extent": [0, 0, ' + BIG + ', 1]}',
     "field 'extent'"),
])
def test_a_malformed_request_line_gets_a_protocol_error_and_the_worker_lives_on(line, message):
    out = Recorder()
    _serve(Worker(out), [line, '{"id": 99, "cmd": "hello"}'])
    replies = out.replies()  # every line the worker wrote is strict JSON (no Infinity)
    for raw in out.getvalue().splitlines():
        json.loads(raw, parse_constant=lambda c, raw=raw: pytest.fail(f"non-standard JSON {c} in {raw}"))
    assert replies[0]["ok"] is False and replies[0]["error"]["type"] == "ProtocolError", replies
    assert message in replies[0]["error"]["message"]
    assert replies[-1]["id"] == 99 and replies[-1]["ok"] is True


def test_an_unexpected_failure_in_dispatch_is_reported_and_the_loop_goes_on(monkeypatch):
    """One error boundary: whatever a request raises, the worker answers it and serves the next line."""
    worker = Worker(Recorder())

    def boom(request):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(worker, "dispatch", boom)
    _serve(worker, ['{"id": 5, "cmd": "hello"}'])
    replies = worker._out.replies()
    assert replies[0] == {"id": 5, "ok": False, "error": {"type": "InternalError",
                                                          "message": "TypeError(\"unhashable type: 'list'\")"}}


@pytest.mark.parametrize("fields, message", [
    ({"variants": 100000}, "variants"),
    ({"variants": 0}, "variants"),
    ({"tile_size": 10 ** 30}, "tile_size"),
    ({"tile_size": 4}, "tile_size"),
    ({"overlap": -1}, "overlap"),
    ({"overlap": 600, "tile_size": 512}, "overlap"),
    ({"bands": [0]}, "bands"),
    ({"bands": [1, 2, 3, 4, 5, 6]}, "bands"),
    ({"captioner": {"temperature": "hot"}}, "captioner.temperature"),
    ({"captioner": {"temperature": 1e400}}, "captioner.temperature"),
    ({"captioner": {"temperature": 50}}, "captioner.temperature"),
    ({"captioner": {"parallel_requests": 10 ** 6}}, "captioner.parallel_requests"),
    ({"captioner": {"slots": 0}}, "captioner.slots"),
    ({"captioner": {"timeout_s": -1}}, "captioner.timeout_s"),
    ({"captioner": {"n_ctx": 10 ** 12}}, "captioner.n_ctx"),
    ({"captioner": {"n_threads": 0}}, "captioner.n_threads"),
    ({"captioner": {"seed": -5}}, "captioner.seed"),
    ({"captioner": {"server_url": 5}}, "captioner.server_url"),
    ({"captioner": {"test_model": "yes"}}, "captioner.test_model"),
    ({"captioner": {"colour": "red"}}, "captioner: unknown field 'colour'"),
])
def test_index_fields_are_bounded_before_any_model_loads(fields, message):
    out = Recorder()
    _serve(Worker(out), [json.dumps({"id": 7, "cmd": "index", "db": "/tmp/x.sqlite", "raster": "/nope.tif",
                                     **fields})])
    replies = out.replies()
    assert len(replies) == 1, replies  # no "loading the captioning model" status: refused first
    assert replies[0]["error"]["type"] == "ProtocolError" and message in replies[0]["error"]["message"]


def test_a_second_job_with_an_id_in_use_is_refused_and_cannot_steal_the_first_ones_cancel(monkeypatch):
    worker = Worker(Recorder())
    started, stops = threading.Event(), []

    def slow_index(rid, request, stop):
        stops.append(stop)
        started.set()
        assert stop.wait(20), "never cancelled"
        return {"cancelled": True, "raster": request["raster"]}

    monkeypatch.setattr(worker, "_index", slow_index)
    job = {"id": "job-1", "cmd": "index", "db": "/tmp/x.sqlite", "raster": "/first.tif"}
    worker.dispatch(job)
    assert started.wait(20)
    worker.dispatch({**job, "raster": "/second.tif"})
    refused = worker._out.replies()[-1]
    assert refused["id"] == "job-1" and refused["error"]["type"] == "ProtocolError"
    assert "already running" in refused["error"]["message"]
    worker.dispatch({"id": "c", "cmd": "cancel", "target": "job-1"})
    worker.stop_jobs()
    finals = [r for r in worker._out.replies() if r.get("id") == "job-1" and r.get("ok")]
    assert [r["result"]["raster"] for r in finals] == ["/first.tif"] and len(stops) == 1


def test_the_protocols_bounds_are_the_command_lines():
    """The worker's limits are derived from the dataclasses the core and the CLI run on (one place)."""
    from dataclasses import fields

    from tilescribe.plugin.core.bounds import bounds_of
    from tilescribe.plugin.core.indexing.index_settings import MAX_VARIANTS, IndexSettings
    from tilescribe.plugin.core.raster.tiling import MAX_TILE_SIZE
    from tilescribe.plugin.worker import protocol

    limits = {f.name: bounds_of(f) for f in fields(IndexSettings)}
    assert (limits["tile_size"].high, limits["variants"].high) == (MAX_TILE_SIZE, MAX_VARIANTS)
    assert protocol.FIELDS["index"]["tile_size"][1](MAX_TILE_SIZE + 1) == f"a whole number from 16 to {MAX_TILE_SIZE}"
    assert protocol.FIELDS["index"]["variants"][1](MAX_VARIANTS) is None


def test_every_request_dataclass_field_is_checked_and_nothing_else_is_invented():
    """Adding a field to SearchRequest, IndexSettings or CaptionerSettings adds its check, with no edit here."""
    from dataclasses import fields

    from tilescribe.plugin.core.captioning.factory import CaptionerSettings
    from tilescribe.plugin.core.search.search import SearchRequest
    from tilescribe.plugin.worker import protocol

    assert set(protocol.CAPTIONER_FIELDS) == {f.name for f in fields(CaptionerSettings)}
    search = protocol.FIELDS["search"]
    assert {f.name for f in fields(SearchRequest)} - {"exclude_tiles"} <= set(search)
    assert search["query"][0] is True and search["k"][0] is False  # required: no default in the dataclass
    assert protocol.CAPTIONER_FIELDS["temperature"](2.5) == "a number from 0 to 2"
    assert protocol.CAPTIONER_FIELDS["timeout_s"](0) == "a number above 0 and at most 86400"


def test_replies_are_strict_json_even_for_non_finite_numbers_and_escape_characters():
    out = Recorder()
    worker = Worker(out)
    worker.send({"id": 1, "ok": True, "result": {"bbox": [float("inf"), 0, 1, float("nan")], "caption": "a\x9bb"}})
    line = out.getvalue().splitlines()[0]
    reply = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert reply["result"]["bbox"] == [None, 0, 1, None] and reply["result"]["caption"] == "a\x9bb"
    assert "\x9b" not in line
