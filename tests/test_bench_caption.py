"""bench-caption runs every engine setting on real tiles and reports the promised fields."""

import json

import pytest

from tilescribe.plugin.core.captioning.llama_server import find_llama_server
from tilescribe.plugin.core.errors import ModelError

pytestmark = pytest.mark.slow
FIELDS = {"engine", "slots", "shape", "s_per_tile", "tiles_per_hour", "prompt_tokens", "cached_prompt_tokens",
          "output_tokens", "encode_s", "prompt_s", "generate_s"}


def test_bench_caption_reports_each_engine_setting(tmp_path, monkeypatch, capsys):
    try:
        find_llama_server()
    except ModelError as exc:
        pytest.skip(f"no llama-server: {exc}")
    from tilescribe.plugin.cli.main import main
    from tilescribe.devtools.bench import shaped_gguf

    monkeypatch.setattr(shaped_gguf, "CACHE", tmp_path / "models")
    code = main(["bench-caption", "--shape", "tiny", "--tiles", "2", "--answer-tokens", "12",
                 "--settings", "in-process", "server:2", "server:1:image-first", "--format", "json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["engine"], r["slots"]) for r in rows] == [("llama-cpp-python", 1), ("llama-server", 2),
                                                         ("llama-server", 1)]
    for row in rows:
        assert FIELDS <= set(row) and row["shape"] == "tiny"
        assert row["output_tokens"] == 12 and row["s_per_tile"] > 0 and row["prompt_tokens"] > 200
    in_process, server, image_first = rows
    assert in_process["cached_prompt_tokens"] == 0 and in_process["encode_s"] is not None
    # Instructions first: the server reuses them from the warm-up tile; image first: almost nothing.
    assert server["cached_prompt_tokens"] > 200 > image_first["cached_prompt_tokens"]


def test_unknown_setting_is_refused(capsys):
    from tilescribe.plugin.cli.main import main

    assert main(["bench-caption", "--settings", "gpu:9"]) == 2
    assert "Unknown --settings entry 'gpu:9'" in capsys.readouterr().err
