"""The proxy through search's own code path: real index files per fold, every query through search()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fakes import HashingEmbedder
from tilescribe.plugin.core.evaluation import (
    CaptionDataset, CaptionItem, EmbeddingCache, EvaluationError, ProxySettings, limit_dataset, load_dataset,
    run_proxy)
from tilescribe.plugin.core.evaluation.through_search import THROUGH_K, run_through_search

WORDS = ["red roof", "green forest", "blue river", "grey road", "white beach"]
GENERIC = "an aerial view of the area"


def toy_dataset() -> CaptionDataset:
    """14 images whose captions repeat across images, so cosines tie; the last one's captions
    are all a caption every image has, so its queries tie with more images than THROUGH_K."""
    items = []
    for n in range(13):
        a, b = WORDS[n % 5], WORDS[(n * 2) % 5]
        captions = (f"{a} near {b}", f"{b} near {a}", GENERIC, f"{a} and {b} {n}", f"{a} with {b}")
        items.append(CaptionItem(f"img{n}", captions))
    items.append(CaptionItem("img13", (GENERIC,) * 5))
    return CaptionDataset("toy", Path("toy"), tuple(items))


def capped(ranks: np.ndarray) -> np.ndarray:
    """Ranks past the search's list are only known to be past it."""
    return np.minimum(ranks, THROUGH_K)


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    dataset, cache = toy_dataset(), EmbeddingCache(HashingEmbedder(dim=16))
    folder = tmp_path_factory.mktemp("folds")
    runs = run_through_search(dataset, cache, ProxySettings(variants=3, lexical=True), folder)
    return dataset, cache, folder, runs


def test_dense_through_search_reproduces_the_proxy_with_its_tie_rule(toy_runs):
    dataset, cache, _, (by_cosine, _, _) = toy_runs
    proxy = run_proxy(dataset, cache, ProxySettings(variants=3))
    assert by_cosine.ranks.tolist() != by_cosine.optimistic_ranks.tolist()  # the toy has ties to count
    assert proxy.ranks.max() > THROUGH_K  # and a tie group longer than search's list
    assert capped(by_cosine.ranks).tolist() == capped(proxy.ranks).tolist()
    assert capped(by_cosine.optimistic_ranks).tolist() == capped(proxy.optimistic_ranks).tolist()


def test_list_order_breaks_cosine_ties_inside_their_bounds(toy_runs):
    _, _, _, (by_cosine, dense_list, fused_list) = toy_runs
    seen = dense_list.ranks <= 10
    assert np.all(by_cosine.optimistic_ranks[seen] <= dense_list.ranks[seen])
    assert np.all(dense_list.ranks[seen] <= by_cosine.ranks[seen])
    assert dense_list.config["ties"] == fused_list.config["ties"] == "list"
    assert not dense_list.config["lexical"] and fused_list.config["lexical"]
    assert fused_list.ranks.tolist() != dense_list.ranks.tolist()  # the words took part


def test_fold_indexes_are_removed_afterwards(toy_runs):
    _, _, folder, _ = toy_runs
    assert list(folder.iterdir()) == []


def test_search_scores_by_best_variant_only():
    with pytest.raises(EvaluationError, match="best variant"):
        run_through_search(toy_dataset(), EmbeddingCache(HashingEmbedder()), ProxySettings(3, "mean"))


@pytest.fixture
def toy_folder(tmp_path, monkeypatch):
    from tilescribe.plugin.cli import eval_command

    monkeypatch.setattr(eval_command, "load_embedder", lambda folder: HashingEmbedder(dim=16))
    folder = tmp_path / "toy"
    folder.mkdir()
    items = toy_dataset().items
    (folder / "test_caps.txt").write_text("\n".join(c for i in items for c in i.captions) + "\n")
    (folder / "test_filename.txt").write_text("\n".join(i.id for i in items for _ in i.captions) + "\n")
    return folder


def test_eval_command_runs_the_proxy_through_search(toy_folder, tmp_path, capsys):
    from tilescribe.plugin.cli.main import main

    out = tmp_path / "report.json"
    code = main(["eval", "--proxy", "--through-search", "--lexical", "--captions", str(toy_folder),
                 "--variants", "3", "--json", str(out)])
    table = capsys.readouterr().out
    assert code == 0 and table.startswith("PROXY")
    names = [run["name"] for run in json.loads(out.read_text())["runs"]]
    assert names == ["hashing-test max v3 search", "hashing-test max v3 search list-order",
                     "hashing-test max v3 search+fts list-order"]
    assert all(name in table for name in names)


def test_eval_command_refuses_through_search_where_it_cannot_apply(toy_folder, capsys):
    from tilescribe.plugin.cli.main import main

    for aggregation in ("mean", "all"):
        assert main(["eval", "--proxy", "--through-search", "--aggregation", aggregation,
                     "--captions", str(toy_folder)]) == 2
        assert f"drop --aggregation {aggregation}" in capsys.readouterr().err
    assert main(["eval", "--through-search", "--captions", str(toy_folder)]) == 2
    assert "proxy options" in capsys.readouterr().err


def test_real_ucm_slice_through_search_matches_the_proxy(shared_data, minilm, tmp_path):
    """Real MiniLM, real sqlite-vec and FTS5 on 60 UCM images: the index path loses nothing."""
    dataset = limit_dataset(load_dataset(shared_data / "captions" / "ucm_test"), 60)
    cache = EmbeddingCache(minilm)
    by_cosine, dense_list, fused_list = run_through_search(dataset, cache, ProxySettings(4, lexical=True), tmp_path)
    proxy = run_proxy(dataset, cache, ProxySettings(4))
    assert capped(by_cosine.ranks).tolist() == capped(proxy.ranks).tolist()
    assert capped(by_cosine.optimistic_ranks).tolist() == capped(proxy.optimistic_ranks).tolist()
    assert len(fused_list.ranks) == len(dense_list.ranks) == 300


# -- Issue 14 review: bad inputs found by attacking `eval --proxy --through-search` ----------------


@pytest.fixture
def no_model(monkeypatch):
    """eval's embedder loader, failing: what must be refused is refused before a model loads."""
    from tilescribe.plugin.cli import eval_command

    def load(folder):
        raise AssertionError("the embedding model was loaded before the settings were checked")

    monkeypatch.setattr(eval_command, "load_embedder", load)


def _line_folder(folder: Path, dataset: CaptionDataset) -> Path:
    folder.mkdir()
    (folder / "test_caps.txt").write_text("\n".join(c for i in dataset.items for c in i.captions) + "\n")
    (folder / "test_filename.txt").write_text("\n".join(i.id for i in dataset.items for _ in i.captions) + "\n")
    return folder


@pytest.mark.parametrize("aggregation", ["mean", "concat", "all"])
def test_aggregation_is_refused_before_the_model_loads(tmp_path, no_model, capsys, aggregation):
    from tilescribe.plugin.cli.main import main

    folder = _line_folder(tmp_path / "toy", toy_dataset())
    assert main(["eval", "--proxy", "--through-search", "--aggregation", aggregation, "--captions", str(folder)]) == 2
    assert f"drop --aggregation {aggregation}" in capsys.readouterr().err


@pytest.mark.parametrize("caption, why", [("x" * 2500, "2500 characters long"),
                                          ("\x01\x02", "The query is empty")])
def test_a_caption_search_would_refuse_names_the_dataset_and_caption(tmp_path, no_model, capsys, caption, why):
    """Was: `The query is 2500 characters long` (or `The query is empty`), after embedding, naming nothing."""
    from tilescribe.plugin.cli.main import main

    items = list(toy_dataset().items)
    items[2] = CaptionItem("img2", items[2].captions[:3] + (caption,) + items[2].captions[4:])
    folder = _line_folder(tmp_path / "toy", CaptionDataset("toy", Path("toy"), tuple(items)))
    assert main(["eval", "--proxy", "--through-search", "--captions", str(folder), "--variants", "2"]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "caption 4 of image 'img2'" in err and why in err
    assert "without --through-search" in err


def test_a_full_temporary_disk_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    """Was `internal error: OperationalError: database or disk is full` (a small TMPDIR)."""
    from tilescribe.plugin.core.evaluation import through_search

    write = through_search.write_fold_index

    def write_on_a_full_disk(store, embedder, variant_texts):
        # The file may not grow past its schema: SQLite's own "database or disk is full".
        pages = store._conn.execute("pragma page_count").fetchone()[0]
        store._conn.execute(f"pragma max_page_count = {pages}")
        return write(store, embedder, variant_texts)

    monkeypatch.setattr(through_search, "write_fold_index", write_on_a_full_disk)
    folder = tmp_path / "tmp"
    folder.mkdir()
    with pytest.raises(EvaluationError) as caught:
        run_through_search(toy_dataset(), EmbeddingCache(HashingEmbedder(dim=16)), ProxySettings(3), folder)
    message = str(caught.value)
    assert str(folder) in message and "full" in message and "TMPDIR" in message
    assert list(folder.iterdir()) == []


class _Terminated(Exception):
    """What SIGTERM raises in this test if eval installs no handler of its own."""


def test_sigterm_removes_the_temporary_fold_indexes(toy_folder, tmp_path, monkeypatch):
    """SIGTERM (a closed terminal, `kill`) ended the process at once, leaving the fold indexes in TMPDIR."""
    import os
    import signal

    from tilescribe.plugin.cli.main import main

    temporary, folds = _stop_at_second_fold(tmp_path, monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))

    def not_handled(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, not_handled)
    try:
        with pytest.raises(SystemExit) as caught:
            main(["eval", "--proxy", "--through-search", "--captions", str(toy_folder), "--variants", "3"])
    finally:
        handler = signal.signal(signal.SIGTERM, previous)
    assert caught.value.code == 128 + signal.SIGTERM and len(folds) == 2
    assert handler is not_handled  # eval put the handler it found back
    assert list(temporary.iterdir()) == []


def test_ctrl_c_removes_the_temporary_fold_indexes(toy_folder, tmp_path, monkeypatch, capsys):
    from tilescribe.plugin.cli.main import main

    def ctrl_c():
        raise KeyboardInterrupt  # where Ctrl-C lands: inside a fold's writes

    temporary, folds = _stop_at_second_fold(tmp_path, monkeypatch, ctrl_c)
    assert main(["eval", "--proxy", "--through-search", "--captions", str(toy_folder), "--variants", "3"]) == 130
    assert "interrupted" in capsys.readouterr().err and len(folds) == 2
    assert list(temporary.iterdir()) == []


def _stop_at_second_fold(tmp_path, monkeypatch, stop):
    """A TMPDIR of the test's own, and `stop()` called as the second fold's index is written."""
    import tempfile

    from tilescribe.plugin.core.evaluation import through_search

    temporary = tmp_path / "tmpdir"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    write, folds = through_search.write_fold_index, []

    def write_then_stop(store, embedder, variant_texts):
        folds.append(store.path)
        if len(folds) == 2:
            stop()
        return write(store, embedder, variant_texts)

    monkeypatch.setattr(through_search, "write_fold_index", write_then_stop)
    return temporary, folds
