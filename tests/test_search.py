"""Search: score of a tile = its best variant, k, extent filter, query checks, run selection."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import HashingEmbedder
from helpers import build_index
from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.errors import QueryError
from tilescribe.plugin.core.search.search import SearchRequest, search
from tilescribe.plugin.core.index.store import Store

CAPTIONS = [
    ["a red barn beside fields", "green crop fields", "farmland with a barn"],
    ["a harbour with boats", "boats moored at a pier"],
    ["dense forest", "a river through forest", "tall trees"],
    ["a parking lot with cars", "cars parked in rows"],
    ["an airport runway", "airplanes near a terminal"],
    ["a beach and sea", "waves on a sandy beach"],
]


@pytest.fixture
def index(tmp_path, rgb_raster, hashing_embedder):
    store, run_id = build_index(tmp_path / "s.tilescribe.sqlite", rgb_raster, hashing_embedder,
                                CAPTIONS, tile_size=100)
    yield store, run_id
    store.close()


def test_best_variant_decides_the_tile_rank(index, hashing_embedder):
    store, _ = index
    # Dense ranking alone, whatever the default: word matches may lift a tile above a higher cosine.
    hits = search(store, hashing_embedder, SearchRequest("a river through forest", k=3, lexical=False))
    assert hits[0].tile_id == store.tiles(hits[0].run_id)[2].window.key
    assert hits[0].caption == "a river through forest"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert len({h.tile_id for h in hits}) == 3
    assert hits[0].score >= hits[1].score >= hits[2].score


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_one_search_reads_its_run_record_once(index, hashing_embedder, monkeypatch, mode):
    # The run (embedder, vector table, raster) is looked up once and handed down, not re-read per step.
    store, run_id = index
    search(store, hashing_embedder, SearchRequest("warm", k=3, mode=mode))  # a legacy index's one-off embedder check
    looked_up = []
    read = Store.run_info
    monkeypatch.setattr(Store, "run_info", lambda self, rid: looked_up.append(rid) or read(self, rid))
    hits = search(store, hashing_embedder, SearchRequest("boats moored at a pier", k=3, mode=mode))
    assert hits[0].caption == "boats moored at a pier"
    assert looked_up == [run_id]


def test_hits_carry_geo_facts_of_their_tile(index, hashing_embedder):
    store, run_id = index
    hit = search(store, hashing_embedder, SearchRequest("boats moored at a pier", k=1))[0]
    tile = store.tiles(run_id)[1]
    assert (hit.window, hit.bbox, hit.crs) == (tile.window, tile.bbox, "EPSG:32618")


def test_k_larger_than_the_index_returns_every_captioned_tile(index, hashing_embedder):
    store, _ = index
    assert len(search(store, hashing_embedder, SearchRequest("anything", k=50))) == len(CAPTIONS)


def test_extent_filter_keeps_only_tiles_meeting_the_box(index, hashing_embedder):
    store, run_id = index
    far_right = store.tiles(run_id)[2].bbox  # third tile of the first row
    box = (far_right[0] + 1, far_right[1] + 1, far_right[2], far_right[3])
    hits = search(store, hashing_embedder, SearchRequest("a beach", k=10, extent=box))
    assert {h.tile_id for h in hits} <= {store.tiles(run_id)[i].window.key for i in (2, 5)}
    assert hits


@pytest.mark.parametrize("query, k, message", [
    ("", 10, "empty"), ("   \n\t ", 10, "empty"), ("\x00\x01", 10, "empty"),
    ("farm", 0, "at least 1"), ("farm", -3, "at least 1"), ("x" * 5000, 10, "characters long"),
])
def test_bad_queries_are_refused_with_what_to_change(index, hashing_embedder, query, k, message):
    store, _ = index
    with pytest.raises(QueryError, match=message):
        search(store, hashing_embedder, SearchRequest(query, k=k))


def test_searching_with_another_embedder_is_refused(index):
    store, _ = index
    with pytest.raises(QueryError, match="embedded with hashing-test"):
        search(store, HashingEmbedder(dim=32, name="other"), SearchRequest("farm"))


def test_empty_index_says_to_index_first(tmp_path, hashing_embedder):
    from tilescribe.plugin.core.index.store import Store

    with Store(tmp_path / "e.tilescribe.sqlite", create=True) as store:
        with pytest.raises(QueryError, match="no captioned tiles"):
            search(store, hashing_embedder, SearchRequest("farm"))


def test_tile_with_thousands_of_matching_variants_does_not_hide_other_tiles(tmp_path, rgb_raster):
    # More variants than sqlite-vec's largest k on one tile: search must still find k tiles.
    embedder = HashingEmbedder(dim=16)
    store, run_id = build_index(tmp_path / "m.tilescribe.sqlite", rgb_raster, embedder,
                                [["harbour"], ["harbour boats"], ["forest"]], tile_size=100)
    crowded = store.tiles(run_id)[0]
    variants = [CaptionVariant.plain(f"harbour {i}") for i in range(4200)]
    store.save_captions(crowded.id, variants, np.repeat(embedder.embed(["harbour"]), 4200, axis=0))
    hits = search(store, embedder, SearchRequest("harbour", k=3))
    assert [h.tile_db_id for h in hits][:2] == [crowded.id, store.tiles(run_id)[1].id]
    assert len(hits) == 3
    store.close()


def test_word_matches_lift_a_tile_the_embedding_ranks_low(tmp_path, rgb_raster):
    # dim 2: every caption lands in one of two buckets, so the embedding barely tells them apart.
    embedder = HashingEmbedder(dim=2)
    captions = [["quarry"], ["green fields"], ["a river"], ["farm houses"], ["open pit quarry"]]
    store, run_id = build_index(tmp_path / "f.tilescribe.sqlite", rgb_raster, embedder, captions, tile_size=100)
    tiles = store.tiles(run_id)
    dense = search(store, embedder, SearchRequest("open pit", k=5, lexical=False))
    fused = search(store, embedder, SearchRequest("open pit", k=5, lexical=True))
    assert fused[0].tile_db_id == tiles[4].id and fused[0].caption == "open pit quarry"
    assert dense[0].tile_db_id != tiles[4].id or dense[0].score == dense[1].score
    assert {h.tile_db_id for h in fused} == {h.tile_db_id for h in dense}  # reordered, nothing lost
    by_tile = {h.tile_db_id: h.score for h in dense}
    assert all(h.score == pytest.approx(by_tile[h.tile_db_id]) for h in fused)  # the cosine, shown as is
    store.close()


def test_word_matches_honour_extent_and_exclusions(index, hashing_embedder):
    store, run_id = index
    tiles = store.tiles(run_id)
    box = tiles[1].bbox  # the harbour tile only (boxes of neighbours touch it: a tiny inset)
    inset = (box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1)
    hits = search(store, hashing_embedder, SearchRequest("boats on a beach", k=5, extent=inset, lexical=True))
    assert [h.tile_db_id for h in hits] == [tiles[1].id]
    hits = search(store, hashing_embedder, SearchRequest("boats", k=5, exclude_tiles=(tiles[1].id,), lexical=True))
    assert tiles[1].id not in {h.tile_db_id for h in hits}


def test_the_command_line_turns_word_fusion_on_and_off(tmp_path, rgb_raster, monkeypatch, capsys):
    import json

    from helpers import in_process_cli

    embedder = HashingEmbedder(dim=2)
    captions = [["quarry"], ["green fields"], ["a river"], ["farm houses"], ["open pit quarry"]]
    db = tmp_path / "c.tilescribe.sqlite"
    store, run_id = build_index(db, rgb_raster, embedder, captions, tile_size=100)
    windows = {t.id: t.window.as_list() for t in store.tiles(run_id)}
    expected = {flag: [windows[h.tile_db_id] for h in search(store, embedder,
                                                              SearchRequest("open pit", k=5, lexical=flag))]
                for flag in (True, False)}
    store.close()
    assert expected[True] != expected[False]
    cli = in_process_cli(monkeypatch, capsys, embedder)
    # No flag: SearchRequest's default, the one place it is decided.
    for argv, lexical in ((["--no-lexical"], False), (["--lexical"], True), ([], SearchRequest.lexical)):
        code, out, _ = cli("search", "--db", db, "open pit", "-k", 5, "--format", "json", *argv)
        assert code == 0 and [h["window"] for h in json.loads(out)] == expected[lexical]


def test_word_fusion_on_a_file_without_its_word_table_says_so(tmp_path, rgb_raster, hashing_embedder):
    """Issue 14 review: a file whose caption_fts is gone (edited by another tool, partly restored)
    gave `internal error: OperationalError: no such table: caption_fts` for --lexical only."""
    import hashlib
    import sqlite3

    from tilescribe.plugin.core.errors import IndexFileError

    db = tmp_path / "w.tilescribe.sqlite"
    store, _ = build_index(db, rgb_raster, hashing_embedder, CAPTIONS, tile_size=100)
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("drop table caption_fts")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with Store(db, readonly=True) as store:
        assert search(store, hashing_embedder, SearchRequest("boats", k=3, lexical=False))
        with pytest.raises(IndexFileError) as caught:
            search(store, hashing_embedder, SearchRequest("boats", k=3, lexical=True))
    message = str(caught.value)
    assert str(db) in message and "caption_fts" in message and "without --lexical" in message
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
