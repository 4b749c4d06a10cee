"""Is an index whole? SQLite keeps no page checksums, so a damaged page can change results silently.

`check_index` (behind `tilescribe check`) runs SQLite's integrity check, checks that every
run's captions, vectors (their one copy, in vec0) and words agree in number and shape, that
the vectors are finite and unit length, and a few known searches: a stored caption's own
vector must find that caption first. `check_after_crash` is the cheap part (counts and known
searches of one run, no full read), run when an indexer resumes after one died.

The one module besides store*.py that writes its own SQL, on purpose: an auditor counts and
reads the tables directly, so a bug in the reads it audits (store_reads.py) cannot hide itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IndexFileError, IndexingError
from .vector_table import dim_disagreement
from .store import Store
from .store_reads import VectorReader, parse_run_row, run_caption_ids, run_rows, vec_table

KNOWN_SEARCHES = 3  # per run: the first, middle and last caption
SAME_VECTOR = 1e-4  # cosine distance of a vector to itself, float noise included
CHUNK = 10_000  # vectors read at a time by the full check
# SQLite's WAL formats (sqlite.org/walformat.html): -wal header size; -shm index version,
# mxFrame at byte 16 of its header and nBackfill at byte 96 (the checkpoint info).
WAL_HEADER = 32
WAL_INDEX_VERSION = 3007000
SHM_CHECKPOINT_INFO = 96


@dataclass
class CheckReport:
    checked: list[str] = field(default_factory=list)  # what passed, with figures
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_index(store: Store) -> CheckReport:
    report = CheckReport()
    rows = [row[0] for row in store._conn.execute("pragma integrity_check(20)")]
    if rows == ["ok"]:
        report.checked.append("SQLite integrity check: ok")
    else:
        report.problems.append("SQLite integrity check: " + "; ".join(rows[:5]))
    _check_tables(store, report)
    for row in run_rows(store._conn):
        try:
            parse_run_row(row)
        except ValueError as exc:  # search, info and the indexer would stop on it
            report.problems.append(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
    for run_id, embedder_id, dim in store._conn.execute(
            "select r.id, r.embedder_id, e.dim from runs r join embedders e on e.id = r.embedder_id"
            " order by r.id").fetchall():
        before = len(report.problems)
        # Not store.run_info: a damaged run record must be reported, not stop the check.
        disagreement = dim_disagreement(store._conn, vec_table(embedder_id), run_id, dim)
        if disagreement:  # every query of that table would fail: the rest of this run is not checked
            report.problems.append(f"{disagreement[0].upper()}{disagreement[1:]}.")
            continue
        reader = VectorReader(store._conn, store.path, vec_table(embedder_id), dim, finite=False)
        counts = _check_counts(store, run_id, embedder_id, report.problems)
        _check_vectors(store, run_id, reader, report.problems)
        searches = _known_searches(store, run_id, reader, report.problems)
        if len(report.problems) == before:
            report.checked.append(f"run {run_id}: {counts} vectors ({dim}-d) agree with their captions, all finite "
                                  f"and unit length; {searches} known searches found their own caption first")
    return report


def check_after_crash(store: Store, run_id: int) -> None:
    """Counts and known searches of the run an indexer resumes after the last one died; stops if damaged."""
    run = store.run_info(run_id)
    problems: list[str] = []
    _check_counts(store, run_id, run.embedder_id, problems)
    _known_searches(store, run_id, store.vector_reader(run), problems)
    if problems:
        raise IndexingError(
            f"The index {store.path} looks damaged after the last indexer stopped abruptly: {problems[0]} "
            f"Run `tilescribe check --db {store.path}` for details; restore a copy, or index into a new file "
            "(--db). Nothing more was captioned.")


def wal_note(path: Path) -> str:
    """A note when the index's -wal file holds changes not yet copied into the index file itself."""
    waiting = _frames_not_checkpointed(Path(path))
    if not waiting:
        return ""
    return (f"{path}-wal holds {waiting} pages of changes not yet written into {path} (an indexer is running, "
            "or was stopped abruptly): copy both files together, or open the index writable once (e.g. "
            "`tilescribe check`), after which a normal end writes them in.")


def _frames_not_checkpointed(path: Path) -> int:
    """WAL frames not yet copied into the database, from the -shm index (its size when there is none)."""
    try:
        wal_size = Path(f"{path}-wal").stat().st_size
    except OSError:
        return 0
    if wal_size <= WAL_HEADER:
        return 0
    try:
        with open(f"{path}-shm", "rb") as handle:
            shm = handle.read(SHM_CHECKPOINT_INFO + 4)
    except OSError:
        shm = b""
    if len(shm) >= SHM_CHECKPOINT_INFO + 4 and struct.unpack_from("=I", shm, 0)[0] == WAL_INDEX_VERSION:
        (max_frame,), (backfilled,) = struct.unpack_from("=I", shm, 16), struct.unpack_from("=I", shm, 96)
        return max(0, max_frame - backfilled)
    with open(f"{path}-wal", "rb") as handle:
        page_size = struct.unpack_from(">I", handle.read(WAL_HEADER), 8)[0] or 4096
    return (wal_size - WAL_HEADER) // (page_size + 24)


def _check_tables(store: Store, report: CheckReport) -> None:
    captions = store._conn.execute("select count(*) from captions").fetchone()[0]
    orphans = store._conn.execute(
        "select count(*) from captions c where not exists (select 1 from tiles t where t.id = c.tile_id)").fetchone()[0]
    has_words = store._conn.execute(
        "select count(*) from sqlite_schema where type = 'table' and name = 'caption_fts'").fetchone()[0]
    words = store._conn.execute("select count(*) from caption_fts").fetchone()[0] if has_words else None
    if words is None:
        report.problems.append("The word index (table caption_fts) is missing: search works without --lexical.")
    elif not captions == words:
        report.problems.append(f"{captions} captions, but {words} word entries.")
    if orphans:
        report.problems.append(f"{orphans} captions belong to no tile.")
    # SQLite stores NaN as NULL and keeps infinities: a box must be finite to be drawn or searched by extent.
    bad_boxes = store._conn.execute(
        "select count(*) from tiles where not (abs(minx) <= 1.7976931348623157e308 and abs(miny) <= "
        "1.7976931348623157e308 and abs(maxx) <= 1.7976931348623157e308 and abs(maxy) <= "
        "1.7976931348623157e308)").fetchone()[0]
    if bad_boxes:
        report.problems.append(f"{bad_boxes} tiles have boxes that are not finite numbers.")


def _check_counts(store: Store, run_id: int, embedder_id: int, problems: list) -> int:
    captions = store._conn.execute(
        "select count(*) from captions c join tiles t on t.id = c.tile_id where t.run_id = ?", (run_id,)).fetchone()[0]
    vectors = store._conn.execute(
        f"select count(*) from {vec_table(embedder_id)} where run_id = ?", (run_id,)).fetchone()[0]
    recorded = store.vector_state(run_id)[0]
    bare = store._conn.execute(
        "select count(*) from tiles t where t.run_id = ? and t.status = 'done' and not exists"
        " (select 1 from captions c where c.tile_id = t.id)", (run_id,)).fetchone()[0]
    if not captions == vectors == recorded:
        problems.append(f"Run {run_id} has {captions} captions but {vectors} vectors ({recorded} recorded).")
    if bare:
        problems.append(f"Run {run_id} has {bare} tiles marked captioned without captions.")
    return vectors


def _check_vectors(store: Store, run_id: int, reader: VectorReader, problems: list) -> None:
    """Every vector of the run (its one copy, in vec0's chunks): dim float32 values, finite, unit (or zero)."""
    caption_ids, _ = run_caption_ids(store._conn, run_id)
    for start in range(0, len(caption_ids), CHUNK):
        ids = caption_ids[start:start + CHUNK]
        try:
            found, vectors = reader.read(ids)
        except IndexFileError as exc:
            problems.append(str(exc))
            return
        missing = np.setdiff1d(ids, found)
        if len(missing):
            problems.append(f"Run {run_id}: captions {missing[:5].tolist()} have no vector.")
            return
        norms = np.linalg.norm(vectors, axis=1)
        bad = found[~np.isfinite(norms) | ((np.abs(norms - 1) > 1e-3) & (norms != 0))]
        if len(bad):
            problems.append(f"Run {run_id}: vectors of captions {bad[:5].tolist()} are not finite unit vectors.")
            return


def _known_searches(store: Store, run_id: int, reader: VectorReader, problems: list) -> int:
    """Search with a few stored vectors: each must find its own caption at distance ~0."""
    ids = [row[0] for row in store._conn.execute(
        "select c.id from captions c join tiles t on t.id = c.tile_id where t.run_id = ? order by c.id", (run_id,))]
    picks = sorted({ids[0], ids[len(ids) // 2], ids[-1]}) if ids else []
    for caption_id in picks[:KNOWN_SEARCHES]:
        try:
            found, vectors = reader.read(np.array([caption_id]))
        except IndexFileError as exc:
            problems.append(str(exc))
            continue
        if not len(found):
            problems.append(f"Run {run_id}: caption {caption_id} has no vector.")
            continue
        hits = store._conn.execute(
            f"select caption_id, distance from {reader.table} where embedding match ? and k = 8"
            " and run_id = ? order by distance", (vectors[0].tobytes(), run_id)).fetchall()
        exact = [cid for cid, distance in hits if distance is not None and distance <= SAME_VECTOR]
        if caption_id not in exact and not len(exact) == len(hits) == 8:  # 8 exact: duplicates of it
            problems.append(f"Run {run_id}: caption {caption_id}'s own vector does not find it (best match "
                            f"{hits[0] if hits else 'none'}): the vector table disagrees with the stored vectors.")
    return len(picks)
