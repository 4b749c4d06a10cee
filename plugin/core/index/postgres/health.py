"""`tilescribe check` on a PostgreSQL index: per run, captions, vectors and words agree in number,
the vectors are unit length, and a few stored vectors find their own caption first.

PostgreSQL checksums its own pages (where the cluster has data checksums) and pgvector refuses
NaN and infinite values, so what is left to check is that TileScribe's tables agree.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ..health import KNOWN_SEARCHES, SAME_VECTOR, CheckReport
from .vector_search import table_of


def check_index(store: Any) -> CheckReport:
    report = CheckReport()
    conn = store._conn
    version = conn.execute("select max(version) from schema_version").fetchone()[0]
    report.checked.append(f"PostgreSQL schema {store.target.schema}: version {version}")
    for run in store.runs():
        before = len(report.problems)
        table = sql.Identifier(table_of(run))
        captions = store.variant_count(run.id)
        vectors = conn.execute(sql.SQL("select count(*) from {} where run_id = %s").format(table),
                               (run.id,)).fetchone()[0]
        recorded = store.vector_state(run.id)[0]
        if not captions == vectors == recorded:
            report.problems.append(f"Run {run.id} has {captions} captions but {vectors} vectors ({recorded} recorded).")
        bare = conn.execute("select count(*) from tiles t where t.run_id = %s and t.status = 'done' and not exists"
                            " (select 1 from captions c where c.tile_id = t.id)", (run.id,)).fetchone()[0]
        if bare:
            report.problems.append(f"Run {run.id} has {bare} tiles marked captioned without captions.")
        not_unit = conn.execute(sql.SQL(
            "select count(*) from {} where run_id = %s and abs(vector_norm(embedding) - 1) > 1e-3"
            " and vector_norm(embedding) != 0").format(table), (run.id,)).fetchone()[0]
        if not_unit:
            report.problems.append(f"Run {run.id}: {not_unit} vectors are not unit length.")
        ids = [row[0] for row in conn.execute("select c.id from captions c join tiles t on t.id = c.tile_id"
                                              " where t.run_id = %s order by c.id", (run.id,))]
        picks = sorted({ids[0], ids[len(ids) // 2], ids[-1]})[:KNOWN_SEARCHES] if ids else []
        reader = store.vector_reader(run)
        for caption_id in picks:
            found, stored = reader.read([caption_id])
            if not len(found):
                report.problems.append(f"Run {run.id}: caption {caption_id} has no vector.")
                continue
            hits = store.nearest_variants(run, stored[0], 8, None)
            exact = [cid for _, cid, distance in hits if distance <= SAME_VECTOR]
            if caption_id not in exact and not len(exact) == len(hits) == 8:
                report.problems.append(f"Run {run.id}: caption {caption_id}'s own vector does not find it (best "
                                       f"match {hits[0] if hits else 'none'}).")
        if len(report.problems) == before:
            report.checked.append(f"run {run.id}: {vectors} vectors ({run.dim}-d) agree with their captions and "
                                  f"words, all unit length; {len(picks)} known searches found their own caption first")
    return report
