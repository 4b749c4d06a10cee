"""Issue 22: inputs that ended as exit 70 ("internal error ... a bug") get a message naming the file."""

from __future__ import annotations

import json

import pytest

from helpers import in_process_cli
from rasters import write_raster


@pytest.fixture
def cli(monkeypatch, capsys, hashing_embedder):
    return in_process_cli(monkeypatch, capsys, hashing_embedder)


def test_a_caption_file_line_that_is_not_valid_unicode_is_one_bad_line(tmp_path, cli):
    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    captions = tmp_path / "c.jsonl"
    captions.write_bytes(json.dumps({"window": [0, 0, 64, 64], "captions": ["a harbour"]}).encode() + b"\n"
                         + b'{"window": [64, 0, 64, 64], "captions": ["bad \xff\xfe"]}\n')
    code, out, err = cli("import-captions", "--raster", raster, "--captions", captions,
                         "--db", tmp_path / "i.tilescribe.sqlite")
    assert code == 1, err  # as for any skipped line: the valid ones are imported, the bad ones listed
    assert f"{captions}:2: skipped: not valid UTF-8 text" in err and "imported 1 tiles" in err


def test_a_catalogue_entry_with_a_file_name_leaving_its_folder_is_refused(tmp_path, cli, monkeypatch):
    from tilescribe.plugin.core.models import catalogue

    extra = tmp_path / "catalogue.json"
    extra.write_text(json.dumps({"models": [{
        "name": "evil", "title": "t", "repo": "a/b", "model_file": "../../escape.gguf", "mmproj_file": "p.gguf",
        "size_bytes": 1, "size_approximate": True, "family": "auto", "licence": "x", "note": "y"}]}),
        encoding="utf-8")
    monkeypatch.setenv(catalogue.EXTRA_CATALOGUE_ENV, str(extra))
    catalogue._read.cache_clear()
    try:
        code, out, err = cli("models", "download", "evil", "--dir", tmp_path / "models")
    finally:
        catalogue._read.cache_clear()
    assert code == 2, err
    assert f"The model catalogue {extra} cannot be read" in err and "'../../escape.gguf'" in err
    assert not (tmp_path / "escape.gguf").exists()


def test_models_verify_with_a_dir_that_is_a_file_says_so(tmp_path, cli):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    code, out, err = cli("models", "verify", "--dir", a_file)
    assert code == 2
    assert f"The models folder {a_file} is a file, not a folder" in err
