"""Word matching over caption variants (SQLite FTS5, BM25) and its fusion with dense ranking."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from .store import Store

MAX_TERMS = 64
RRF_K = 60  # the usual reciprocal-rank-fusion constant: damps the weight of top ranks
_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str:
    """User text as a safe FTS5 query: each word quoted, OR-ed; FTS syntax in the text is inert.

    Quoting keeps `"`, `*`, `NEAR(`, `AND`, column filters and the like from being
    read as FTS5 operators, so no query can be a syntax error or change the search.
    """
    words = [w for w in _WORD.findall(text.lower()) if w][:MAX_TERMS]
    return " OR ".join(f'"{word}"' for word in dict.fromkeys(words))


def lexical_ranking(store: Store, run_id: int, text: str, limit: int = 200) -> list[tuple[int, int]]:
    """[(tile_db_id, caption_id)] best BM25 match first, one entry per tile."""
    query = fts_query(text)
    if not query:
        return []
    rows = store.conn.execute(
        "select c.tile_id, f.rowid from caption_fts f join captions c on c.id = f.rowid"
        " join tiles t on t.id = c.tile_id where caption_fts match ? and t.run_id = ?"
        " order by bm25(caption_fts) limit ?",
        (query, run_id, limit * 8),
    ).fetchall()
    seen, ranking = set(), []
    for tile_id, caption_id in rows:
        if tile_id not in seen:
            seen.add(tile_id)
            ranking.append((tile_id, caption_id))
    return ranking[:limit]


def reciprocal_rank_fusion(rankings: Sequence[Iterable[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """[(item, fused score)] best first; an item missing from a ranking gets nothing from it."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
