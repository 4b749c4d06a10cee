"""Properties over arbitrary input: a query ranks or is refused clearly; a model answer parses or is rejected.

Hypothesis writes the inputs: any Unicode (lone surrogates, controls, FTS5 and SQL
syntax, very long text). The only exceptions allowed out are the ones a user can act
on: QueryError for a query, CaptionError for a model answer.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes import HashingEmbedder
from helpers import build_index
from rasters import write_raster
from tilescribe.plugin.core.captioning.parse import parse_variants
from tilescribe.plugin.core.captions import FIELDS
from tilescribe.plugin.core.errors import CaptionError, QueryError
from tilescribe.plugin.core.search.lexical import lexical_ranking
from tilescribe.plugin.core.search.search import MAX_K, SearchRequest, search

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text as users and pasted documents give it: any code point (surrogates too), plus the
# syntax of the layers below (FTS5 operators, SQL, JSON) mixed in.
ANY_CHAR = st.characters(blacklist_categories=())
SYNTAX = st.sampled_from(['"', "'", "*", "NEAR(", ")", "AND", "OR", "NOT", "-", "^", ":", "caption:",
                          "'); drop table tiles; --", "{", "}", "[", "]", "\x00", "\u202e", "\ud800",
                          "harbour", "boats", "forest", " "])
QUERY = st.one_of(
    st.text(ANY_CHAR, max_size=80),
    st.lists(SYNTAX, max_size=20).map("".join),
    st.text(ANY_CHAR, min_size=1990, max_size=2100),  # both sides of the length limit
)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("properties")
    raster = write_raster(tmp / "r.tif", width=300, height=200)
    embedder = HashingEmbedder()
    store, run_id = build_index(tmp / "p.tilescribe.sqlite", raster, embedder, [
        ["a harbour with many boats", "boats at a pier"], ["a dense green forest", "trees"],
        ["straße with ünïcödé signs", "港口"], ["'); drop table tiles; --", '"NEAR(x y)" *']], tile_size=100)
    yield store, run_id, embedder
    store.close()


@FAST
@given(query=QUERY, k=st.one_of(st.just(10), st.integers(-3, MAX_K + 5)))
def test_any_query_gives_a_ranked_list_or_a_query_error(small_index, query, k):
    store, run_id, embedder = small_index
    try:
        dense = search(store, embedder, SearchRequest(query, k=k, lexical=False))
        fused = search(store, embedder, SearchRequest(query, k=k, lexical=True))
    except QueryError as err:
        assert str(err)  # a message to show, and nothing else escapes
        return
    assert all(a.score >= b.score for a, b in zip(dense, dense[1:]))  # fusion may reorder, dense may not
    for hits in (dense, fused):
        assert 1 <= k and len(hits) <= min(k, 4)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert len({h.tile_db_id for h in hits}) == len(hits)
        assert all(-1.0001 <= h.score <= 1.0001 for h in hits)


@FAST
@given(text=QUERY)
def test_any_text_gives_a_lexical_ranking(small_index, text):
    store, run_id, _ = small_index
    ranking = lexical_ranking(store, run_id, text)
    tiles = [tile for tile, _ in ranking]
    assert len(tiles) == len(set(tiles)) <= 4
    assert store._conn.execute("select count(*) from tiles").fetchone()[0] == 6  # nothing was executed


# --- model answers --------------------------------------------------------------------------------

FIELD_TEXT = st.one_of(st.text(ANY_CHAR, max_size=30), st.sampled_from(["", " ", "a road", "A ROAD"]))
VARIANT = st.one_of(
    st.fixed_dictionaries({name: FIELD_TEXT for name in FIELDS}),
    st.dictionaries(st.sampled_from([*FIELDS, "One Sentence", "feature-list", "x"]),
                    st.one_of(FIELD_TEXT, st.lists(FIELD_TEXT, max_size=3), st.integers(), st.none()),
                    max_size=4),
)
JSONISH = st.one_of(
    st.lists(VARIANT, max_size=6).map(lambda items: json.dumps({"variants": items})),
    st.lists(VARIANT, max_size=6).map(json.dumps),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                 lambda inner: st.one_of(st.lists(inner, max_size=3),
                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                 max_leaves=12).map(json.dumps),
)
ANSWER = st.one_of(
    st.text(ANY_CHAR, max_size=200),
    st.tuples(st.text(ANY_CHAR, max_size=20), JSONISH, st.text(ANY_CHAR, max_size=20)).map("".join),
    st.tuples(JSONISH, st.floats(0, 1)).map(lambda pair: pair[0][: int(len(pair[0]) * pair[1])]),  # cut off
    st.lists(st.sampled_from(['{"variants": [', "{", "}", "[", "]", ",", ":", '"', '"caption"', '"x"',
                              "```json", "\\u", "\x00"]), max_size=40).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(raw=ANSWER, n=st.integers(1, 6))
def test_any_model_answer_parses_into_valid_variants_or_is_rejected(raw, n):
    try:
        variants = parse_variants(raw, n)
    except CaptionError as err:
        assert str(err)
        return
    assert len(variants) == n
    keys = {tuple(getattr(v, name).casefold() for name in FIELDS) for v in variants}
    assert len(keys) == n  # distinct
    for variant in variants:
        for name in FIELDS:
            text = getattr(variant, name)
            assert text and text == text.strip() and all(ch.isprintable() for ch in text)
            text.encode("utf-8")  # storable: no lone surrogate


@pytest.mark.parametrize("raw", ["[" * 100_000, '{"variants": [' + "[" * 5000, '{"a":' * 5000])
def test_deeply_nested_answers_are_rejected_not_crashed(raw):
    with pytest.raises(CaptionError):
        parse_variants(raw, 3)
