"""bench-caption runs every engine setting on real tiles and reports the promised fields."""

import json

import pytest

from tilescribe.plugin.core.captioning.llama_server import find_llama_server
from tilescribe.plugin.core.errors import ModelError

pytestmark = pytest.mark.slow
FIELDS = {"engine", "slots", "shape", "s_per_tile", "tiles_per_hour", "prompt_tokens", "cached_prompt_tokens",
          "output_tokens", "encode_s", "prompt_s", "generate_s"}


@pytest.fixture
def bench_caption(tmp_path, monkeypatch):
    """`tilescribe bench-caption ARGS` with the tiny pair written into tmp_path; skips without llama-server."""
    try:
        find_llama_server()
    except ModelError as exc:
        pytest.skip(f"no llama-server: {exc}")
    from tilescribe.plugin.cli.main import main
    from tilescribe.devtools.bench import shaped_gguf

    monkeypatch.setattr(shaped_gguf, "CACHE", tmp_path / "models")
    return lambda *args: main(["bench-caption", *args])


def test_bench_caption_reports_each_engine_setting(bench_caption, capsys):
    code = bench_caption("--shape", "tiny", "--tiles", "2", "--answer-tokens", "12",
                         "--settings", "in-process", "server:2", "server:1:image-first", "--format", "json")
    assert code == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert [(r["engine"], r["slots"]) for r in rows] == [("llama-cpp-python", 1), ("llama-server", 2),
                                                         ("llama-server", 1)]
    for row in rows:
        assert FIELDS <= set(row) and row["shape"] == "tiny"
        assert row["output_tokens"] == 12 and row["s_per_tile"] > 0 and row["prompt_tokens"] > 200
        # two rounds by default, each setting's spread over them
        assert row["rounds"] == 2 and len(row["s_per_tile_rounds"]) == 2 and row["tiles"] == 4
        assert row["s_per_tile_min"] <= row["s_per_tile"] <= row["s_per_tile_max"]
        assert row["output_tokens_each"] == [12] * 4 and row["answer_held"] is True
        # each round says how busy the machine was, before and after it
        assert len(row["load_average"]) == 2 and all(len(pair) == 2 and min(pair) >= 0 for pair in row["load_average"])
    # interleaved: A B C A B C
    said = [line.split(": ", 1)[0] for line in out.err.splitlines() if line.startswith("round ")]
    assert said == ["round 1/2"] * 3 + ["round 2/2"] * 3
    in_process, server, image_first = rows
    assert in_process["cached_prompt_tokens"] == 0 and in_process["encode_s"] is not None
    # Instructions first: the server reuses them from the warm-up tile; image first: almost nothing.
    assert server["cached_prompt_tokens"] > 200 > image_first["cached_prompt_tokens"]


def test_unknown_setting_is_refused(capsys):
    from tilescribe.plugin.cli.main import main

    assert main(["bench-caption", "--settings", "gpu:9"]) == 2
    assert "Unknown --settings entry 'gpu:9'" in capsys.readouterr().err


def test_every_engine_stops_at_the_same_answer_length_and_slots_get_enough_tiles(bench_caption, capsys):
    """The tiny shape's answers at a realistic length: in process and llama-server both stop at
    exactly the tokens asked for (the real schema's bounds let the JSON close at different lengths
    in each: 654 vs 767 tokens for the 3B shape), and 3 slots never share 1 tile."""
    code = bench_caption("--shape", "tiny", "--tiles", "1", "--variants", "1", "2", "--rounds", "1",
                         "--settings", "in-process", "server:3", "--threads", "2", "--format", "json")
    assert code == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert "--tiles 1 is fewer than 3 slots: timing 3 tiles" in out.err
    assert [(r["variants"], r["engine"]) for r in rows] == [(1, "llama-cpp-python"), (1, "llama-server"),
                                                            (2, "llama-cpp-python"), (2, "llama-server")]
    for row in rows:
        assert row["answer_tokens"] == 160 * row["variants"]  # the default: what real answers take
        assert row["output_tokens_each"] == [row["answer_tokens"]] * 3 and row["answer_held"] is True


def test_text_report_gives_each_settings_spread(bench_caption, capsys):
    assert bench_caption("--shape", "tiny", "--tiles", "1", "--answer-tokens", "8",
                         "--settings", "in-process", "server:1", "--rounds", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("shape | variants | engine | slots | order | s/tile median | min-max (rounds)")
    for line in lines[1:3]:
        cells = line.split(" | ")
        low, high = cells[6].split(" ")[0].split("-")
        assert float(low) <= float(cells[5]) <= float(high) and cells[6].endswith("(3)")
