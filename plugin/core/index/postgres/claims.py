"""Many indexers on one run: tiles claimed under a lease, captions stored only by the claim's holder.

An indexer claims CLAIM_PAGE tiles at a time (`FOR UPDATE SKIP LOCKED`: two claims never wait on
or take the same row) and holds them until `lease_until`; every claim and save renews the leases it
holds, and so does the indexer's heartbeat every lease/3 while it works (heartbeat.py). A tile
whose lease lapsed (its indexer died, or lost the server) goes back to the queue and another
indexer claims it. A save stores a tile's captions, vectors and status in one transaction,
and only while the tile is unclaimed or claimed by this indexer: once another indexer holds it, our
late answer is dropped, so a tile's captions are written once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Optional, Sequence

import numpy as np
from psycopg import sql

from ..store_writes import TileCaptions
from .schema import TEXT_SEARCH_CONFIG, vector_table

# Tiles claimed at a time: the captioner asks for the next tile as one finishes, so one claim
# per tile keeps the other indexers' share of the queue as large as it can be (a query costs
# about a millisecond; a tile's caption, seconds).
CLAIM_PAGE = 1
TILE_COLUMNS = "id, run_id, col_off, row_off, width, height, minx, miny, maxx, maxy, status, reason"


def claim(conn, me: str, lease_s: float, run_id: int, statuses: Sequence[str], after: int, page: int,
          max_attempts: Optional[int]) -> list[tuple]:
    """Claim up to CLAIM_PAGE tiles of the run in these states (TILE_COLUMNS rows, by id); the caller
    holds the transaction.

    Pending tiles are taken whatever their id (a lapsed lease brings one back behind us); failed ones
    only after `after`, so that one pass tries each once. Failed tiles tried `max_attempts` times stay.
    """
    renew(conn, me, lease_s)
    rows = conn.execute(
        f"update tiles set claimed_by = %(me)s, claimed_at = now(), lease_until = now() + make_interval(secs =>"
        f" %(lease)s) where id in (select id from tiles where run_id = %(run)s and status = any(%(statuses)s)"
        f" and (status = 'pending' or id > %(after)s) and (status != 'failed' or attempts < %(limit)s)"
        f" and (claimed_by is null or (claimed_by != %(me)s and lease_until < now()))"
        f" order by id limit %(n)s for update skip locked) returning {TILE_COLUMNS}",
        {"me": me, "lease": lease_s, "run": run_id, "statuses": list(statuses), "after": after,
         "limit": max_attempts if max_attempts is not None else 1 << 30, "n": min(page, CLAIM_PAGE)}).fetchall()
    return sorted(rows)


def renew(conn, me: str, lease_s: float) -> None:
    """Extend the leases this indexer holds: it is alive."""
    conn.execute("update tiles set lease_until = now() + make_interval(secs => %s) where claimed_by = %s"
                 " and status = 'pending'", (lease_s, me))


def release(conn, me: str) -> None:
    """Give back the tiles this indexer claimed and did not finish (it stops, or a process with its
    host:pid before it died holding them)."""
    conn.execute("update tiles set claimed_by = null, claimed_at = null, lease_until = null where claimed_by = %s"
                 " and status = 'pending'", (me,))


def write_captions(conn, me: str, entries: Sequence[TileCaptions], stamp: str) -> list[int]:
    """Replace these tiles' captions, vectors and status (done, by `me`); the caller holds the transaction.

    Returns the tiles left alone because another indexer holds them now.
    """
    for entry in entries:
        if len(entry.variants) != len(entry.vectors) or not len(entry.variants):
            raise ValueError("one vector per caption variant is required")
    ids = [int(entry.tile_id) for entry in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("each tile may appear once per write")
    rows = conn.execute("select t.id, t.run_id, r.embedder_id, t.claimed_by from tiles t join runs r on r.id ="
                        " t.run_id where t.id = any(%s) for update of t", (ids,)).fetchall()
    tiles = {row[0]: row[1:] for row in rows}
    missing = [tile_id for tile_id in ids if tile_id not in tiles]
    if missing:
        raise ValueError(f"unknown tile ids: {missing[:5]}")
    lost = [tile_id for tile_id in ids if tiles[tile_id][2] not in (None, me)]
    kept = [entry for entry in entries if entry.tile_id not in set(lost)]
    if not kept:
        return lost
    kept_ids = [int(entry.tile_id) for entry in kept]
    removed = Counter(row[0] for row in conn.execute(
        "delete from captions c using tiles t where t.id = c.tile_id and c.tile_id = any(%s) returning t.run_id",
        (kept_ids,)))  # their vectors go with them (on delete cascade)
    columns: dict[str, list] = defaultdict(list)
    for entry in kept:
        for number, variant in enumerate(entry.variants):
            for name, value in (("tile", entry.tile_id), ("variant", number), ("one", variant.one_sentence),
                                ("feature", variant.feature), ("caption", variant.caption),
                                ("words", variant.embedding_text())):
                columns[name].append(value)
    caption_ids = {(row[1], row[2]): row[0] for row in conn.execute(
        "insert into captions (tile_id, variant, one_sentence, feature, caption, words) select t, v, o, f, c,"
        f" to_tsvector('{TEXT_SEARCH_CONFIG}', w) from unnest(%s::bigint[], %s::int[], %s::text[], %s::text[],"
        " %s::text[], %s::text[]) as u(t, v, o, f, c, w) returning id, tile_id, variant",
        [columns[name] for name in ("tile", "variant", "one", "feature", "caption", "words")])}
    by_embedder: dict[int, list] = defaultdict(list)
    for entry in kept:
        run_id, embedder_id, _ = tiles[entry.tile_id]
        vectors = np.ascontiguousarray(entry.vectors, dtype=np.float32)
        for number, vector in enumerate(vectors):
            by_embedder[embedder_id].append((caption_ids[(entry.tile_id, number)], run_id, entry.tile_id, vector))
    with conn.cursor() as cur:
        for embedder_id, vector_rows in by_embedder.items():
            copy_sql = sql.SQL("copy {} (caption_id, run_id, tile_id, embedding) from stdin with (format binary)")
            with cur.copy(copy_sql.format(sql.Identifier(vector_table(embedder_id)))) as copy:
                copy.set_types(["int8", "int8", "int8", "vector"])
                for vector_row in vector_rows:
                    copy.write_row(vector_row)
        cur.executemany(
            "update tiles set status = 'done', reason = '', raw = %s, updated_at = %s, pixel_hash = coalesce(%s,"
            " pixel_hash), done_by = %s, claimed_by = null, claimed_at = null, lease_until = null where id = %s",
            [(entry.raw, stamp, entry.pixel_hash, me, entry.tile_id) for entry in kept])
        added = Counter()
        for entry in kept:
            added[tiles[entry.tile_id][0]] += len(entry.variants)
        cur.executemany("update runs set vector_count = vector_count + %s, vector_version = vector_version + 1"
                        " where id = %s", [(added[r] - removed[r], r) for r in set(added) | set(removed)])
    return lost


def workers(conn, run_id: int) -> list[dict]:
    """[{indexer, claimed, claim_age_s, lease_left_s, done}]: who holds tiles of the run now (a negative
    lease_left_s: lapsed, the tiles are back in the queue) and how many tiles each indexer stored."""
    found: dict[str, dict] = {}
    for who, claimed, age, left in conn.execute(
            "select claimed_by, count(*), extract(epoch from now() - min(claimed_at))::float8,"
            " extract(epoch from min(lease_until) - now())::float8 from tiles where run_id = %s and claimed_by"
            " is not null and status = 'pending' group by claimed_by order by 1", (run_id,)):
        found[who] = {"indexer": who, "claimed": claimed, "claim_age_s": round(age, 1),
                      "lease_left_s": round(left, 1), "done": 0}
    for who, done in conn.execute("select done_by, count(*) from tiles where run_id = %s and done_by is not null"
                                  " group by done_by order by 1", (run_id,)):
        found.setdefault(who, {"indexer": who, "claimed": 0, "claim_age_s": None, "lease_left_s": None})["done"] = done
    return list(found.values())
