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


def _damaged_copy(tmp_path, hashing_embedder, *statements):
    import sqlite3

    import numpy as np
    import sqlite_vec

    from helpers import build_index

    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    db = tmp_path / "r.tilescribe.sqlite"
    store, _ = build_index(db, raster, hashing_embedder, [["a harbour"], ["a forest"]])
    store.close()
    conn = sqlite3.connect(db)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    nan = np.full(hashing_embedder.dim, np.nan, dtype=np.float32).tobytes()
    with conn:
        for statement in statements:
            conn.execute(statement, (nan,)) if "?" in statement else conn.execute(statement)
    conn.close()
    return db


def test_nan_vectors_are_named_by_search_and_check(tmp_path, cli, hashing_embedder):
    db = _damaged_copy(tmp_path, hashing_embedder, "update caption_vec_1 set embedding = ? where caption_id = "
                                                   "(select min(caption_id) from caption_vec_1)")
    code, out, err = cli("search", "harbour", "--db", db)
    assert code == 2, err
    assert f"Index {db} holds vectors that are not numbers" in err and "tilescribe check" in err
    code, out, err = cli("check", "--db", db)
    assert code == 2 and "internal error" not in err and "not finite unit vectors" in err


def test_caption_rows_deleted_under_their_tiles_are_named_by_search(tmp_path, cli, hashing_embedder):
    db = _damaged_copy(tmp_path, hashing_embedder, "delete from captions where tile_id = 1")
    code, out, err = cli("search", "harbour", "--db", db)
    assert code == 2, err
    assert f"Index {db} has vectors whose captions are gone" in err and "tilescribe check" in err


def test_tile_boxes_that_are_not_finite_are_reported_by_check_and_never_printed_as_infinity(
        tmp_path, cli, hashing_embedder):
    db = _damaged_copy(tmp_path, hashing_embedder, "update tiles set minx = 1e999 where id = 1")
    for fmt in ("json", "geojson"):
        code, out, err = cli("search", "harbour", "--db", db, "--format", fmt)
        assert code == 0, err
        assert "Infinity" not in out and "NaN" not in out
        json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    code, out, err = cli("check", "--db", db)
    assert code == 2 and "1 tiles have boxes that are not finite numbers" in err


def test_an_embedder_dimension_that_disagrees_with_its_vector_table_is_named(tmp_path, cli, hashing_embedder):
    db = _damaged_copy(tmp_path, hashing_embedder, "update embedders set dim = 32")
    for argv in (("search", "harbour", "--db", db), ("check", "--db", db)):
        code, out, err = cli(*argv)
        assert code == 2, err
        assert "internal error" not in err
        assert f"he embedder record of run 1 says 32-d, but its vector table caption_vec_1 holds " \
               f"{hashing_embedder.dim}-d vectors" in err  # "The" in check's list, "the" in search's sentence


def test_vector_rowids_deleted_do_not_stop_search_and_check_names_them(tmp_path, cli, hashing_embedder):
    db = _damaged_copy(tmp_path, hashing_embedder, "delete from caption_vec_1_rowids")
    code, out, err = cli("search", "harbour", "--db", db)
    assert code in (0, 2) and "internal error" not in err, err
    code, out, err = cli("check", "--db", db)
    assert code == 2 and "have no vector" in err


def test_a_disk_that_fills_while_the_manifest_is_written_is_named_and_leaves_no_tmp(tmp_path, monkeypatch):
    import errno
    import pathlib

    from tilescribe.plugin.core.errors import ModelError
    from tilescribe.plugin.core.models.folder import Manifest, write_manifest

    real = pathlib.Path.write_text

    def full(self, data, *args, **kwargs):
        if self.name.endswith(".json.tmp"):
            real(self, "", *args, **kwargs)  # created, then no room for the bytes
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(ModelError) as failed:
        write_manifest(tmp_path, Manifest("m", "a/b", "main", "c0ffee", "auto", []))
    assert f"Cannot write the model manifest {tmp_path}" in str(failed.value) and "No space left" in str(failed.value)
    assert list(tmp_path.iterdir()) == []


def test_a_gguf_header_with_arrays_nested_absurdly_deep_is_a_corrupt_file(tmp_path, cli):
    import struct

    from tilescribe.plugin.core.captioning.gguf_header import read_gguf_info
    from tilescribe.plugin.core.errors import ModelError

    key = b"general.evil"
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    data += struct.pack("<IQ", 9, 1) * 100_000 + struct.pack("<IQ", 4, 0)
    deep = tmp_path / "deep.gguf"
    deep.write_bytes(data)
    with pytest.raises(ModelError, match=f"The model file {deep} is truncated or corrupt .*nested"):
        read_gguf_info(deep, "model")
    code, out, err = cli("models", "verify", deep)
    assert code != 70 and "internal error" not in err and "nested" in out + err


@pytest.mark.parametrize("files", [[{"file": "x.gguf"}], [5], [{"file": "../../x.gguf", "role": "model", "size": 1,
                                                               "etag": "e"}],
                                   [{"file": "x.gguf", "role": "model", "size": "big", "etag": "e"}]])
def test_a_damaged_manifest_record_is_named_by_list_and_verify(tmp_path, cli, files):
    folder = tmp_path / "models" / "a--b"
    folder.mkdir(parents=True)
    (folder / "tilescribe-model.json").write_text(json.dumps({
        "name": "m", "repo": "a/b", "revision": "main", "commit": "c", "family": "auto", "files": files}))
    code, out, err = cli("models", "list", "--dir", tmp_path / "models")  # lists the catalogue; skips the folder
    assert code == 0 and "internal error" not in err, err
    code, out, err = cli("models", "verify", "--dir", tmp_path / "models")
    assert code == 1 and "internal error" not in err, err
    assert f"FAIL {folder}: The model manifest {folder / 'tilescribe-model.json'} is damaged" in out, out
