"""Caption dataset loaders: line format, JSON images, mosaic tiles, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tilescribe.plugin.core.errors import CaptionImportError
from tilescribe.plugin.core.evaluation import load_dataset


def write_lines(folder: Path, captions: list[str], names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    (folder / "test_filename.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return folder


def test_line_format_groups_consecutive_captions_by_file_name(tmp_path):
    folder = write_lines(tmp_path / "toy", ["a port", "ships", "a farm", "fields"],
                         ["p.jpg", "p.jpg", "f.jpg", "f.jpg"])
    dataset = load_dataset(folder)
    assert dataset.name == "toy" and len(dataset) == 2
    assert dataset.items[0].id == "p.jpg" and dataset.items[0].captions == ("a port", "ships")
    assert [(q.id, q.text, q.target) for q in dataset.queries()] == [
        ("p.jpg#0", "a port", 0), ("p.jpg#1", "ships", 0), ("f.jpg#0", "a farm", 1), ("f.jpg#1", "fields", 1)]
    assert load_dataset(folder / "test_caps.txt").items == dataset.items


def test_misaligned_line_files_name_both_files_and_counts(tmp_path):
    folder = write_lines(tmp_path / "bad", ["a", "b", "c"], ["x.jpg", "x.jpg"])
    with pytest.raises(CaptionImportError, match=r"test_caps.txt has 3 lines but .*test_filename.txt has 2"):
        load_dataset(folder)


def test_missing_file_name_list_is_named(tmp_path):
    folder = write_lines(tmp_path / "half", ["a"], ["x.jpg"])
    (folder / "test_filename.txt").unlink()
    with pytest.raises(CaptionImportError, match=r"Missing .*test_filename.txt"):
        load_dataset(folder)


def test_captions_of_one_image_must_be_consecutive(tmp_path):
    folder = write_lines(tmp_path / "shuffled", ["a", "b", "c"], ["x.jpg", "y.jpg", "x.jpg"])
    with pytest.raises(CaptionImportError, match=r"test_filename.txt line 3: 'x.jpg' appeared earlier"):
        load_dataset(folder)


def test_empty_caption_line_is_reported_with_its_number(tmp_path):
    folder = write_lines(tmp_path / "gap", ["a", "", "c"], ["x.jpg", "x.jpg", "x.jpg"])
    with pytest.raises(CaptionImportError, match=r"test_caps.txt line 2 is empty"):
        load_dataset(folder)


def test_json_list_of_images(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"images": [
        {"image": "images/1.tif", "captions": ["a port ", "ships"]},
        {"id": "farm", "captions": ["fields"]},
    ]}))
    dataset = load_dataset(path)
    assert dataset.name == "set"
    assert [item.id for item in dataset.items] == ["1.tif", "farm"]
    assert dataset.items[0].image == tmp_path / "images" / "1.tif"
    assert dataset.items[0].captions == ("a port", "ships")
    path.write_text(json.dumps([{"image": "2.tif", "captions": ["x"]}]))  # a bare list works too
    assert load_dataset(path).image_ids == ("2.tif",)


def test_json_tiles_keep_their_pixel_window(tmp_path):
    path = tmp_path / "tiles.json"
    path.write_text(json.dumps({"tiles": [
        {"row": 0, "col": 1, "pixel_window": [256, 0, 256, 256], "image": "i/9.tif", "captions": ["a"]},
    ]}))
    item = load_dataset(path).items[0]
    assert item.id == "r0c1" and item.pixel_window == (256, 0, 256, 256)


@pytest.mark.parametrize("content, message", [
    ('{"images": 3}', "is not a caption dataset"),
    ("[]", "is not a caption dataset"),
    ('{"x": [1]}', "is not a caption dataset"),
    ("[1]", "entry 0 is not an object"),
    ('[{"id": "a", "captions": "one"}]', 'entry 0: "captions" must be a list'),
    ('[{"id": "a", "captions": ["ok", ""]}]', 'entry 0: "captions" must be a list'),
    ('[{"captions": ["ok"]}]', "entry 0 has neither"),
    ('[{"id": "a", "captions": ["x"]}, {"id": "a", "captions": ["y"]}]', "entry 1: id 'a' is used twice"),
    ('[{"id": "a", "captions": ["x"], "pixel_window": [0, 0]}]', '"pixel_window" must be four'),
    ("{not json", "is not valid JSON"),
])
def test_wrong_json_shapes_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CaptionImportError, match="bad.json") as caught:
        load_dataset(path)
    assert message in str(caught.value)


def test_missing_or_unknown_dataset_path(tmp_path):
    with pytest.raises(CaptionImportError, match="not found: .*nothing.json"):
        load_dataset(tmp_path / "nothing.json")
    (tmp_path / "caps.csv").write_text("a,b\n")
    with pytest.raises(CaptionImportError, match="Unknown caption dataset format: .*caps.csv"):
        load_dataset(tmp_path / "caps.csv")


def test_real_caption_sets_load_with_five_captions_per_image(shared_data):
    rsicd = load_dataset(shared_data / "captions" / "rsicd_test")
    assert len(rsicd) == 1093 and {len(item.captions) for item in rsicd.items} == {5}
    ucm_lines = load_dataset(shared_data / "captions" / "ucm_test")
    ucm_json = load_dataset(shared_data / "ucm_captions_test" / "ucm_captions_test.json")
    assert len(ucm_lines) == len(ucm_json) == 210
    # Both UCM files name an image by its file name, so their items can be matched.
    by_id = {item.id: item.captions for item in ucm_json.items}
    assert all(by_id[item.id] == item.captions for item in ucm_lines.items)
    assert all(item.image.is_file() for item in ucm_json.items)


def test_real_mosaic_tiles_have_windows_on_the_grid(shared_data):
    tiles = load_dataset(shared_data / "ucm_captions_test" / "ucm_grid_mosaic_tiles.json")
    assert len(tiles) == 210
    assert tiles.items[1].id == "r0c1" and tiles.items[1].pixel_window == (256, 0, 256, 256)
    assert all(item.pixel_window[2:] == (256, 256) for item in tiles.items)
