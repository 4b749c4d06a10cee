"""End-to-end evaluation with the real tiny llama.cpp model: caching, scoring as search does, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rasters import write_raster
from tilescribe.plugin.core.captioning.factory import CaptionerSettings
from tilescribe.plugin.core.captioning.llama_backend import LlamaCppCaptioner
from tilescribe.plugin.core.evaluation import (
    END_TO_END_LABEL,
    PLACEHOLDER_NOTE,
    EndToEndSettings,
    EvaluationError,
    default_cache_path,
    limit_dataset,
    load_dataset,
    max_variant_scores,
    plan_jobs,
    run_end_to_end,
    with_images_dir,
)
from tilescribe.plugin.core.search.search import SearchRequest, search
from tilescribe.plugin.core.index.store import Store

pytestmark = pytest.mark.filterwarnings("ignore:Dataset has no geotransform")  # UCM-like, no CRS

VARIANTS = 2
TEST_SETTINGS = EndToEndSettings(VARIANTS, "test-model", placeholder=True)
SCENES = {  # file name -> its human captions
    "field.tif": ["a green field", "farmland with crops"],
    "water.tif": ["a lake of dark water", "water next to a shore"],
    "town.tif": ["dense houses and roads", "a residential area"],
    "forest.tif": ["a forest of trees", "dense woodland"],
}


class CountingCaptioner:
    """The real captioner, counting its caption calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def describe(self) -> dict:
        return self.inner.describe()

    def caption(self, png, n_variants):
        self.calls += 1
        return self.inner.caption(png, n_variants)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def tiny_captioner(tiny_pair):
    # Short strings: a random-weight model fills every field to its limit (RECIPES.md).
    captioner = LlamaCppCaptioner(*tiny_pair, max_len=16)
    yield captioner
    captioner.close()


@pytest.fixture
def counting(tiny_captioner):
    return CountingCaptioner(tiny_captioner)


@pytest.fixture
def image_json(tmp_path):
    """Four small real GeoTIFFs (one without a CRS, like UCM's) and a JSON list of them."""
    (tmp_path / "images").mkdir()
    entries = []
    for seed, (name, captions) in enumerate(SCENES.items()):
        write_raster(tmp_path / "images" / name, width=40, height=32, seed=seed,
                     crs=None if seed == 0 else "EPSG:32618")
        entries.append({"image": f"images/{name}", "captions": captions})
    path = tmp_path / "scenes.json"
    path.write_text(json.dumps({"images": entries}))
    return path


@pytest.fixture
def mosaic_json(tmp_path):
    """A 64x64 mosaic cut into four 32 px tiles, each with its captions."""
    write_raster(tmp_path / "grid_mosaic.tif", width=64, height=64, seed=7)
    captions = [["a field", "farmland"], ["a lake"], ["houses"], ["trees", "a forest"]]
    tiles = [{"row": n // 2, "col": n % 2, "pixel_window": [32 * (n % 2), 32 * (n // 2), 32, 32],
              "captions": text} for n, text in enumerate(captions)]
    path = tmp_path / "grid_mosaic_tiles.json"
    path.write_text(json.dumps({"tile_size": 32, "tiles": tiles}))
    return path


def evaluate(path, captioner, embedder, db, limit=None):
    dataset = limit_dataset(load_dataset(path), limit)
    return run_end_to_end(dataset, plan_jobs(dataset), db, captioner, embedder, TEST_SETTINGS)


def test_images_are_captioned_once_then_read_from_the_cache(image_json, counting, minilm, tmp_path):
    db = tmp_path / "cache.tilescribe.sqlite"
    first = evaluate(image_json, counting, minilm, db)
    assert counting.calls == 4 and first.gallery.captioned_now == 4
    counting.calls = 0
    again = evaluate(image_json, counting, minilm, db)
    assert counting.calls == 0, "a second run must not caption again"
    assert again.gallery.captioned_now == 0 and again.gallery.from_cache == 4
    run = again.run
    assert run.label == END_TO_END_LABEL and run.ranks.shape == (8,)  # 4 images x 2 captions
    assert ((run.ranks >= 1) & (run.ranks <= 4)).all()
    assert (run.optimistic_ranks <= run.ranks).all()
    assert np.array_equal(run.ranks, first.run.ranks)
    assert set(run.recalls()) == {"R@1", "R@5", "R@10", "mR"}
    assert run.recalls()["R@5"] == 100.0  # only 4 images: every target is in the top 5
    assert run.config["placeholder_captions"] and run.config["warning"] == PLACEHOLDER_NOTE


def test_image_scores_are_the_search_scores_of_their_tiles(mosaic_json, counting, minilm, tmp_path):
    db = tmp_path / "mosaic.tilescribe.sqlite"
    result = evaluate(mosaic_json, counting, minilm, db)
    assert counting.calls == 4 and not result.gallery.missing
    queries = result.dataset.queries()
    vectors, owners = _stored_vectors(db, result.gallery.tile_ids)
    scores = max_variant_scores(minilm.embed([q.text for q in queries]), vectors, owners, 4)
    with Store(db) as store:
        run_id = store.runs()[-1].id
        for query, row in zip(queries, scores):
            hits = search(store, minilm, SearchRequest(query.text, k=4, run_id=run_id))
            by_tile = {hit.tile_db_id: hit.score for hit in hits}
            expected = [by_tile[tile_id] for tile_id in result.gallery.tile_ids]
            assert row == pytest.approx(expected, abs=1e-5)


def _stored_vectors(db, tile_ids):
    with Store(db) as store:
        blocks = [store.vectors_of(tile_id) for tile_id in tile_ids]
    owners = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    return np.concatenate(blocks), owners


def test_a_limited_mosaic_run_captions_only_the_tiles_it_scores(mosaic_json, counting, minilm, tmp_path):
    db = tmp_path / "mosaic.tilescribe.sqlite"
    first = evaluate(mosaic_json, counting, minilm, db, limit=2)
    assert counting.calls == 2 and len(first.run.queries) == 3
    counting.calls = 0
    evaluate(mosaic_json, counting, minilm, db)
    assert counting.calls == 2  # the rest of the mosaic; the first two come from the cache


def test_max_variant_scores_takes_the_best_variant_and_ranks_uncaptioned_images_last():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    variants = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
    owners = np.array([0, 0, 2, 2])  # image 1 has no captions
    scores = max_variant_scores(queries, variants, owners, 3)
    assert scores[0] == pytest.approx([np.sqrt(0.5), -np.inf, 1.0])
    assert scores[1] == pytest.approx([1.0, -np.inf, 0.0])


def test_the_line_format_is_refused_with_a_pointer_to_the_proxy(tmp_path):
    (tmp_path / "test_caps.txt").write_text("a field\na lake\n")
    (tmp_path / "test_filename.txt").write_text("1.tif\n2.tif\n")
    with pytest.raises(EvaluationError, match="no images.*Give --proxy"):
        plan_jobs(load_dataset(tmp_path))


def test_a_missing_image_is_named_before_any_model_loads(image_json):
    (image_json.parent / "images" / "water.tif").unlink()
    with pytest.raises(EvaluationError, match=r"Image not found: .*water\.tif \(entry 'water\.tif'"):
        plan_jobs(load_dataset(image_json))


def test_images_dir_finds_images_that_moved(image_json, tmp_path):
    moved = tmp_path / "elsewhere"
    (image_json.parent / "images").rename(moved)
    dataset = with_images_dir(load_dataset(image_json), moved)
    assert [job.raster.parent for job in plan_jobs(dataset)] == [moved] * 4
    assert [job.tile_size for job in plan_jobs(dataset)] == [40] * 4  # one tile per image


def test_mosaic_windows_must_lie_on_the_tile_grid(mosaic_json):
    data = json.loads(mosaic_json.read_text())
    data["tiles"][1]["pixel_window"] = [16, 0, 32, 32]
    mosaic_json.write_text(json.dumps(data))
    with pytest.raises(EvaluationError, match=r"\[16, 0, 32, 32\] is not a tile of grid_mosaic.tif"):
        plan_jobs(load_dataset(mosaic_json))


def test_without_a_raster_beside_it_a_mosaic_json_asks_for_raster(mosaic_json):
    (mosaic_json.parent / "grid_mosaic.tif").unlink()
    with pytest.raises(EvaluationError, match="give the mosaic raster with --raster"):
        plan_jobs(load_dataset(mosaic_json))


def test_the_ucm_datasets_plan_one_tile_per_image(shared_data):
    folder = shared_data / "ucm_captions_test"
    images = plan_jobs(load_dataset(folder / "ucm_captions_test.json"))
    assert len(images) == 210 and {job.tile_size for job in images} == {256}
    (mosaic,) = plan_jobs(load_dataset(folder / "ucm_grid_mosaic_tiles.json"))
    assert mosaic.raster.name == "ucm_grid_mosaic_synthetic_georef.tif"
    assert mosaic.tile_size == 256 and len(mosaic.rows) == 210 and mosaic.whole_grid


def test_the_cache_file_is_named_by_dataset_and_captioner_identity(image_json, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataset = load_dataset(image_json)
    model = CaptionerSettings(model="/m/vlm-q4.gguf", mmproj="/m/proj.gguf")
    path = default_cache_path(dataset, model)
    assert path.parent == tmp_path / "cache" / "tilescribe" / "eval"
    assert path.name.startswith("scenes-vlm-q4-") and path.name.endswith(".tilescribe.sqlite")
    faster = CaptionerSettings(model="/m/vlm-q4.gguf", mmproj="/m/proj.gguf", n_threads=8, n_gpu_layers=9)
    assert default_cache_path(dataset, faster) == path  # speed settings do not change captions
    assert default_cache_path(dataset, CaptionerSettings(model="/m/vlm-q4.gguf", mmproj="/m/proj.gguf",
                                                         temperature=0.9)) != path
    server = CaptionerSettings(server_url="http://user:secret@host:8080", server_model="qwen")
    assert "secret" not in str(default_cache_path(dataset, server))


@pytest.fixture
def cli(monkeypatch, minilm, capsys):
    """`tilescribe eval ...` in-process: the session's embedder, captioner calls counted."""
    from tilescribe.plugin.cli import eval_command
    from tilescribe.plugin.cli.main import main

    for name in ("TILESCRIBE_MODEL", "TILESCRIBE_MMPROJ", "TILESCRIBE_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(eval_command, "load_embedder", lambda folder: minilm)
    made, make_real = [], eval_command.make_captioner

    def counting_captioner(settings):
        made.append(CountingCaptioner(make_real(settings)))
        return made[-1]

    monkeypatch.setattr(eval_command, "make_captioner", counting_captioner)

    def run(*argv):
        code = main(["eval", *map(str, argv)])
        out, err = capsys.readouterr()
        return code, out, err, sum(c.calls for c in made[-1:])
    return run


def test_command_caches_captions_and_says_everywhere_they_are_placeholders(cli, image_json, tmp_path):
    args = ("--captions", image_json, "--test-model", "--variants", VARIANTS,
            "--db", tmp_path / "c.tilescribe.sqlite", "--json", tmp_path / "r.json",
            "--ranks", tmp_path / "ranks.json")
    code, out, err, calls = cli(*args)
    assert code == 0 and calls == 4, err
    assert out.startswith(PLACEHOLDER_NOTE) and "end-to-end test-model v2" in out
    assert "captioning 4/4 images" in err and "captioned 4 images now, 0 from the cache" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["note"] == PLACEHOLDER_NOTE and report["placeholder_captions"] is True
    assert report["label"] == "end-to-end" and report["dataset"]["queries"] == 8
    assert set(report["runs"][0]["metrics"]) == {"R@1", "R@5", "R@10", "mR"}
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    assert ranks["runs"][0]["config"]["warning"] == PLACEHOLDER_NOTE
    assert len(ranks["queries"]) == len(ranks["runs"][0]["ranks"]) == 8
    code, out, err, calls = cli(*args)
    assert code == 0 and calls == 0 and "captioned 0 images now, 4 from the cache" in err
    assert json.loads((tmp_path / "ranks.json").read_text())["runs"] == ranks["runs"]


def test_command_errors_name_what_to_fix(cli, image_json, tmp_path):
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "test_caps.txt").write_text("a field\n")
    (lines / "test_filename.txt").write_text("1.tif\n")
    code, _, err, _ = cli("--captions", lines, "--test-model")
    assert code == 2 and "no images (line format)" in err and "Give --proxy" in err
    code, _, err, _ = cli("--captions", image_json)
    assert code == 2 and "Give the captioning model" in err
    code, _, err, _ = cli("--captions", image_json, "--model", tmp_path / "vlm.gguf",
                          "--mmproj", tmp_path / "proj.gguf", "--db", tmp_path / "x.tilescribe.sqlite")
    assert code == 2 and "vlm.gguf" in err and "Traceback" not in err  # the backend's own message
    code, _, err, _ = cli("--captions", image_json, "--test-model", "--variants", "2", "3")
    assert code == 2 and "one whole number" in err
    (image_json.parent / "images" / "town.tif").unlink()
    code, _, err, _ = cli("--captions", image_json, "--test-model")
    assert code == 2 and "Image not found" in err and "town.tif" in err
