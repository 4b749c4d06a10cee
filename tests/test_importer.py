"""Caption import: valid lines land, bad ones are reported by line number, re-import adds nothing."""

from __future__ import annotations

import json

import pytest

from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.errors import CaptionImportError
from tilescribe.plugin.core.indexing.importer import import_captions
from tilescribe.plugin.core.index.store import Store


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


GOOD = [
    {"window": [0, 0, 128, 128], "captions": ["a farm", "fields"]},
    {"window": [128, 0, 128, 128], "captions": [
        {"one_sentence": "A lake.", "feature": "water in the north", "caption": "A blue lake."}]},
    {"window": [256, 128, 44, 72], "captions": ["an edge tile"]},
]


def test_valid_lines_import_and_bad_lines_are_reported_by_number(tmp_path, rgb_raster, hashing_embedder):
    captions = write_jsonl(tmp_path / "c.jsonl", GOOD + [
        "not json",
        {"window": [10, 0, 128, 128], "captions": ["off grid"]},
        {"window": [0, 128, 128, 72], "captions": []},
        {"window": [0, 128, 128, 72], "captions": [42]},
        {"window": [0, 0, 128, 128], "captions": ["again"]},
        {"captions": ["no window"]},
    ])
    with Store(tmp_path / "i.tilescribe.sqlite", create=True) as store:
        report = import_captions(store, hashing_embedder, str(rgb_raster), str(captions))
        assert report.imported == 3
        assert [n for n, _ in report.bad_lines] == [4, 5, 6, 7, 8, 9]
        reasons = dict(report.bad_lines)
        assert "not valid JSON" in reasons[4]
        assert "not a tile of the 128 px grid" in reasons[5]
        assert "non-empty list" in reasons[6]
        assert "caption 1 must be a string or an object" in reasons[7]
        assert "already given on line 1" in reasons[8]
        assert "'window' must be" in reasons[9]
        assert store.tile_counts(report.run_id)["done"] == 3
        structured = store.captions_of(store.tile_id(report.run_id, "128_0_128x128"))
        assert structured == [CaptionVariant("A lake.", "water in the north", "A blue lake.")]


def test_importing_the_same_file_again_adds_nothing(tmp_path, rgb_raster, hashing_embedder):
    captions = write_jsonl(tmp_path / "c.jsonl", GOOD)
    with Store(tmp_path / "i.tilescribe.sqlite", create=True) as store:
        first = import_captions(store, hashing_embedder, str(rgb_raster), str(captions))
        second = import_captions(store, hashing_embedder, str(rgb_raster), str(captions))
        assert (second.run_id, second.imported, second.already_done) == (first.run_id, 0, 3)
        assert store.vector_count(first.run_id) == 4


def test_a_file_without_any_valid_line_is_an_error(tmp_path, rgb_raster, hashing_embedder):
    captions = write_jsonl(tmp_path / "c.jsonl", ["{}", "[]"])
    with Store(tmp_path / "i.tilescribe.sqlite", create=True) as store:
        with pytest.raises(CaptionImportError, match="no valid line"):
            import_captions(store, hashing_embedder, str(rgb_raster), str(captions))


def test_missing_caption_file_is_named(tmp_path, rgb_raster, hashing_embedder):
    with Store(tmp_path / "i.tilescribe.sqlite", create=True) as store:
        with pytest.raises(CaptionImportError, match="missing.jsonl"):
            import_captions(store, hashing_embedder, str(rgb_raster), str(tmp_path / "missing.jsonl"))
