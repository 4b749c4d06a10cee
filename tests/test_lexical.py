"""Lexical matching: FTS5 syntax in a query is inert, BM25 finds words, fusion is rank-based."""

from __future__ import annotations

import re

import pytest

from helpers import build_index
from tilescribe.plugin.core.search.lexical import fts_query, lexical_ranking, reciprocal_rank_fusion


@pytest.mark.parametrize("text, tiles", [
    ('a "quoted', []), ('boats "quoted', [0]), ("harbour*", [0]), ("NEAR(boats harbour)", [0]), ("boats AND NOT", [0]),
    ("caption: x", []), ("'); drop table tiles; --", []), ("^start", []), ("a + b - c", []), ("harbour + b - c", [0]),
    ("\x00\x07", []),
    ("ünïcödé straße", [1]), ("-", []), ("(((", []),
])
def test_fts_syntax_in_a_query_never_breaks_or_steers_the_search(tmp_path, rgb_raster, hashing_embedder,
                                                                   text, tiles):
    store, run_id = build_index(tmp_path / "l.tilescribe.sqlite", rgb_raster, hashing_embedder,
                                [["a harbour with boats"], ["straße with ünïcödé signs"]], tile_size=100)
    ranking = lexical_ranking(store, run_id, text)
    # Only the words count: the same words typed plainly find the same tiles.
    assert ranking == lexical_ranking(store, run_id, " ".join(re.findall(r"\w+", text)))
    assert [tile for tile, _ in ranking] == [store.tiles(run_id)[i].id for i in tiles]
    assert store._conn.execute("select count(*) from tiles").fetchone()[0] == 6


def test_words_are_quoted_and_or_ed():
    assert fts_query('Boats NEAR("harbour"') == '"boats" OR "near" OR "harbour"'
    assert fts_query("   ") == ""


def test_words_in_every_caption_are_left_to_the_embeddings():
    # "a", "at", "the"... match nearly every caption: BM25 gains nothing, FTS5 would score them all.
    assert fts_query("An airplane parked AT the airport") == '"airplane" OR "parked" OR "airport"'
    assert fts_query("a the of") == ""


def test_bm25_ranks_the_tile_with_the_word_first(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "l.tilescribe.sqlite", rgb_raster, hashing_embedder,
                                [["a forest"], ["a harbour with boats", "boats boats"], ["a road"]], tile_size=100)
    ranking = lexical_ranking(store, run_id, "boats")
    assert [tile for tile, _ in ranking] == [store.tiles(run_id)[1].id]


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([[1, 2, 3], [2, 3, 1], [2]])
    # 2: 1/62 + 1/61 + 1/61; 1: 1/61 + 1/63; 3: 1/63 + 1/62
    assert [item for item, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 2 / 61)
