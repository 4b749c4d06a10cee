"""Word matching over caption variants (SQLite FTS5, BM25) and its fusion with dense ranking."""

from __future__ import annotations

import re
import sqlite3
from typing import Iterable, Sequence

from ..errors import IndexFileError
from ..index.opening import AnyStore

MAX_TERMS = 64
RRF_K = 60  # the constant of Cormack et al. (2009), also SQLite/Elastic's usual default
_WORD = re.compile(r"\w+", re.UNICODE)
# Words in nearly every caption: they add nothing to BM25 (idf ~ 0) and make FTS5 score
# every row of the index (over 100 ms at a million captions).
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in into is it its of on or that the their there "
    "these this to was were which with".split())


def fts_query(text: str) -> str:
    """User text as a safe FTS5 query: each word quoted, OR-ed; FTS syntax in the text is inert.

    Quoting keeps `"`, `*`, `NEAR(`, `AND`, column filters and the like from being
    read as FTS5 operators, so no query can be a syntax error or change the search.
    """
    words = [w for w in _WORD.findall(text.lower()) if w and w not in STOPWORDS][:MAX_TERMS]
    return " OR ".join(f'"{word}"' for word in dict.fromkeys(words))


def lexical_ranking(store: AnyStore, run_id: int, text: str, limit: int = 200, extent=None,
                    exclude: Sequence[int] = ()) -> list[tuple[int, int]]:
    """[(tile_db_id, caption_id)] best BM25 match first, one entry per tile meeting the extent."""
    query = fts_query(text)
    if not query:
        return []
    try:
        rows = store.word_matches(query, run_id, extent, (limit + len(exclude)) * 8)
    except sqlite3.OperationalError as exc:
        if "no such table: caption_fts" not in str(exc):
            raise
        # Every schema has it: the file was changed by another program, or partly restored.
        raise IndexFileError(
            f"Index {store.path} has no word index (table caption_fts), so word matches cannot be fused: "
            "search without --lexical (worker: \"lexical\": false), or index the raster again into a new "
            "file (--db).") from exc
    seen, ranking = set(exclude), []
    for tile_id, caption_id in rows:
        if tile_id not in seen:
            seen.add(tile_id)
            ranking.append((tile_id, caption_id))
    return ranking[:limit]


def rrf(rank):
    """One ranking's share of a fused score (rank 1 = best); works on numpy arrays of ranks too."""
    return 1.0 / (RRF_K + rank)


def reciprocal_rank_fusion(rankings: Sequence[Iterable[int]]) -> list[tuple[int, float]]:
    """[(item, fused score)] best first; an item missing from a ranking gets nothing from it."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + rrf(rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
