"""Fast search: same top-k as exact, extent and exclude honoured, stale indexes caught up or reloaded."""

from __future__ import annotations

import numpy as np
import pytest

from tilescribe.devtools.bench.synthetic import build_synthetic_index
from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.errors import QueryError
from tilescribe.plugin.core.search.fast_cache import FastIndexCache
from tilescribe.plugin.core.search.fastsearch import FastIndex, Projection
from tilescribe.plugin.core.search.search import SearchRequest, search_vector
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.raster.tiling import Tile, Window


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """20,000 clustered 384-d vectors (4,000 tiles x 5 variants) and 20 queries near some tiles."""
    path = tmp_path_factory.mktemp("fast") / "s.tilescribe.sqlite"
    return build_synthetic_index(path, 20_000, n_queries=20)


@pytest.fixture
def store(synthetic):
    with Store(synthetic.path) as store:
        yield store


class Ranking(list):
    """(tile, caption, score) rows; equal to another when scores agree to float32 precision."""

    def __eq__(self, other):
        return len(self) == len(other) and all(
            a[:2] == b[:2] and a[2] == pytest.approx(b[2], abs=1e-5) for a, b in zip(self, other))


def ranked(store, query, run_id, cache=None, **options):
    mode = "fast" if cache else "exact"
    hits = search_vector(store, query, SearchRequest("q", mode=mode, **options), store.run_info(run_id), cache)
    return as_ranking(hits)


def as_ranking(hits) -> Ranking:
    return Ranking((h.tile_db_id, h.caption, h.score) for h in hits)


def test_fast_search_returns_the_exact_top_tiles(synthetic, store):
    cache = FastIndexCache()
    for query in synthetic.queries:
        assert ranked(store, query, synthetic.run_id, cache, k=10) == ranked(store, query, synthetic.run_id, k=10)


def test_fast_search_returns_the_exact_top_50_tiles_and_their_best_variants(synthetic, store):
    # Deeper, tiles with scores a few 1e-7 apart may swap (numpy's sums and sqlite-vec's differ).
    cache = FastIndexCache()
    for query in synthetic.queries:
        fast, exact = ranked(store, query, synthetic.run_id, cache, k=50), ranked(store, query, synthetic.run_id, k=50)
        assert [s for _, _, s in fast] == pytest.approx([s for _, _, s in exact], abs=1e-5)
        assert {(t, c) for t, c, _ in fast} == {(t, c) for t, c, _ in exact}


def test_projected_rows_and_query_give_the_cosine_less_a_constant():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 24)).astype(np.float32) + 2.0  # a large shared mean, as captions have
    query = rng.standard_normal(24).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ (query / np.linalg.norm(query))
    # All components, all float: exact. Centring the query too would add -row @ mean, different per row.
    full = Projection.fit(vectors, 24, float_dims=24)
    approx = full.rows(vectors) @ full.query(query / np.linalg.norm(query))
    assert approx - cosine == pytest.approx(np.full(500, approx[0] - cosine[0]), abs=1e-5)
    # Past 8 float components, int8 steps: rounding costs little; a row beyond the sample's range saturates.
    mixed = Projection.fit(vectors, 24, float_dims=8)
    steps = mixed.rows(vectors)
    rounded = np.concatenate([steps[:, :8], np.rint(steps[:, 8:])], axis=1)
    assert np.abs(steps[:, 8:]).max() <= 127 / 1.4
    error = (rounded - steps) @ mixed.query(query / np.linalg.norm(query))
    assert np.abs(error).max() < 0.02


def test_a_sample_smaller_than_the_dimensions_projects_to_finite_values():
    # 6 sparse vectors in 64 dimensions: the sample spreads along 5 components; the rest had
    # steps of ~1e-46, 0 in float32, and every projection divided by zero.
    rng = np.random.default_rng(5)
    vectors = np.zeros((6, 64), dtype=np.float32)
    for row in vectors:
        row[rng.choice(64, 5, replace=False)] = 1.0
    projection = Projection.fit(vectors, 64, float_dims=32)
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        assert np.isfinite(projection.rows(vectors)).all() and np.isfinite(projection.query(vectors[0])).all()
    assert (projection.step > 0).all()


def test_the_read_margin_covers_the_approximate_scores_error():
    # 48 of 96 components kept: for each query, the margin (the exact reads skip rows more than
    # a margin below a bar) must exceed the approximate score's error on every row.
    rng = np.random.default_rng(3)
    spectrum = np.arange(13, 109) ** -0.8  # power law, as caption embeddings have
    vectors = (rng.standard_normal((20_000, 96)) * spectrum + 0.05).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    projection = Projection.fit(vectors[:2000], 48, float_dims=16)
    steps = projection.rows(vectors)
    steps[:, 16:] = np.clip(np.rint(steps[:, 16:]), -127, 127)
    for query in rng.standard_normal((20, 96)) * spectrum + 0.05:
        error = steps @ projection.query(query) + projection.mean @ query - unit @ query
        assert 0.005 * np.linalg.norm(query) < np.abs(error).max() < projection.margin(query)
    assert Projection.fit(vectors[:300], 48, 16).margin(query) == np.inf  # too small a sample


def test_a_tile_with_thousands_of_variants_near_the_query_leaves_room_for_the_others(tmp_path):
    index = build_synthetic_index(tmp_path / "c.tilescribe.sqlite", 5000, n_queries=1)
    query = index.queries[0]
    noise = np.random.default_rng(2).standard_normal((3000, 384)).astype(np.float32) * 0.002
    crowd = query + noise
    with Store(index.path) as store:
        crowded = store.tiles(index.run_id, "done")[7]
        store.save_captions(crowded.id, [CaptionVariant.plain(f"near {i}") for i in range(3000)], crowd)
        fast = ranked(store, query, index.run_id, FastIndexCache(), k=10)
        exact = ranked(store, query, index.run_id, k=10)
        # Its variants are closer to each other than the approximate score can tell apart: the one
        # read may not be the very best, but the tile leads and the other nine are the exact ones.
        assert fast[0][0] == exact[0][0] == crowded.id and fast[0][2] == pytest.approx(exact[0][2], abs=1e-3)
        assert Ranking(fast[1:]) == Ranking(exact[1:])


def test_the_first_pass_does_the_work_a_small_pool_still_finds_most(synthetic, store):
    # With 200 re-scored vectors out of 20,000 only a good projection keeps recall high.
    index = FastIndex.load(store, store.run_info(synthetic.run_id))
    found = 0
    for query in synthetic.queries:
        exact = {tile for tile, _, _ in ranked(store, query, synthetic.run_id, k=10)}
        found += len(exact & {tile for tile, _, _ in index.search(store, query, 10, rescored=200)})
    assert found / (10 * len(synthetic.queries)) > 0.9


def test_extent_and_exclude_are_honoured(synthetic, store):
    cache = FastIndexCache()
    tiles = {t.id: t for t in store.tiles(synthetic.run_id)}
    box = (0.0, -20 * 512.0, 30 * 512.0, 0.0)  # the top-left 30 x 20 tiles of the 64-wide grid
    for query in synthetic.queries[:5]:
        exact = ranked(store, query, synthetic.run_id, k=10, extent=box)
        assert ranked(store, query, synthetic.run_id, cache, k=10, extent=box) == exact
        assert all(tiles[t].bbox[0] <= box[2] and tiles[t].bbox[3] >= box[1] for t, _, _ in exact)
        top = [t for t, _, _ in exact[:3]]
        fast = ranked(store, query, synthetic.run_id, cache, k=10, extent=box, exclude_tiles=top)
        assert fast == ranked(store, query, synthetic.run_id, k=10, extent=box, exclude_tiles=top)
        assert not set(top) & {t for t, _, _ in fast}


def test_new_captions_are_appended_and_replaced_ones_reload(tmp_path):
    index = build_synthetic_index(tmp_path / "g.tilescribe.sqlite", 3000, n_queries=1)
    cache = FastIndexCache()
    with Store(index.path) as store:
        first = cache.get(store, store.run_info(index.run_id), wait=True)
        store.add_tiles(index.run_id, [Tile(Window(0, 99 * 512, 512, 512), (0.0, -100 * 512.0, 512.0, -99 * 512.0))])
        pending = store.tiles(index.run_id, "pending")[0]
        target = np.zeros(384, dtype=np.float32)
        target[5] = 1.0
        store.save_captions(pending.id, [CaptionVariant.plain("new")], target[None, :])
        assert cache.get(store, store.run_info(index.run_id)) is first and first.rows.n == 3001  # appended in place
        assert ranked(store, target, index.run_id, cache, k=1)[0][0] == pending.id

        replaced = store.tiles(index.run_id, "done")[0]
        store.save_captions(replaced.id, [CaptionVariant.plain("moved")], target[None, :])
        again = cache.get(store, store.run_info(index.run_id), wait=True)
        assert again is not first and again.rows.n == 2997  # five variants became one: reloaded
        assert {t for t, _, _ in ranked(store, target, index.run_id, cache, k=2)} == {pending.id, replaced.id}


def test_auto_mode_searches_exactly_until_the_background_load_is_ready(synthetic, store, monkeypatch):
    cache = FastIndexCache()
    query = synthetic.queries[0]
    auto = ranked(store, query, synthetic.run_id, k=10)  # no cache: exact
    search_vector(store, query, SearchRequest("q", k=10), store.run_info(synthetic.run_id), cache)
    assert not cache.ready(synthetic.path, synthetic.run_id)  # 20,000 vectors: below the threshold
    monkeypatch.setattr("tilescribe.plugin.core.search.search.FAST_MIN_VECTORS", 1000)
    hits = search_vector(store, query, SearchRequest("q", k=10), store.run_info(synthetic.run_id), cache)
    cache.join()
    assert cache.ready(synthetic.path, synthetic.run_id)
    assert as_ranking(hits) == auto
    hits = search_vector(store, query, SearchRequest("q", k=10), store.run_info(synthetic.run_id), cache)
    assert as_ranking(hits) == auto


def test_a_tile_with_thousands_of_top_variants_does_not_hide_the_others(tmp_path, rgb_raster):
    from helpers import build_index
    from fakes import HashingEmbedder

    embedder = HashingEmbedder(dim=16)
    store, run_id = build_index(tmp_path / "m.tilescribe.sqlite", rgb_raster, embedder,
                                [["harbour"], ["harbour boats"], ["forest"]], tile_size=100)
    crowded = store.tiles(run_id)[0]
    store.save_captions(crowded.id, [CaptionVariant.plain(f"harbour {i}") for i in range(4200)],
                        np.repeat(embedder.embed(["harbour"]), 4200, axis=0))
    hits = search_vector(store, embedder.embed(["harbour"])[0], SearchRequest("q", k=3, mode="fast"),
                         store.run_info(run_id))
    assert [h.tile_db_id for h in hits][:2] == [crowded.id, store.tiles(run_id)[1].id]
    assert len(hits) == 3
    store.close()


def test_unknown_mode_is_refused(synthetic, store):
    with pytest.raises(QueryError, match="mode 'quick' is unknown"):
        search_vector(store, synthetic.queries[0], SearchRequest("q", mode="quick"), store.run_info(synthetic.run_id))
