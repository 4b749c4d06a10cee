"""Benchmark (not CI): a team on one PostgreSQL index. Many indexers claim tiles; searchers read meanwhile.

    nice -n 10 .venv/bin/python scripts/bench_postgres_team.py [--tiles 48] [--answer-s 0.5] [--json]

Everything real but the captioning model: a throwaway PostgreSQL cluster with PostGIS and pgvector
(devtools/pg_cluster.py), the real `tilescribe index` command (through tests/cli_harness.py, which
swaps in the hashing embedder so the CPUs go to the processes measured, not to MiniLM), and one
stand-in OpenAI-compatible server per indexer answering one request at a time in --answer-s seconds
(tests/fixtures_server.py: a slow captioning box per machine).

(a) Tiles per hour with 1, 2 and 4 indexer processes on one raster; then 4 again with one SIGKILLed
    mid-run: after its lease lapses every tile is done exactly once (one stored caption set per
    tile; only the tiles it held when it died went to the captioner twice).
(b) 8 searcher processes at once (reader role: SELECT only) while 2 indexers write: search p50/p95
    and errors, beside 1 searcher alone and 8 with no writer (the baselines, same run); the reader
    searches and cannot write.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

QUERIES = ("fields and a road", "a grey road", "green fields", "a road runs north", "fields split by a road")
TILE = 64


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    import numpy as np

    values = np.asarray(seconds) * 1000
    return round(float(np.percentile(values, 50)), 1), round(float(np.percentile(values, 95)), 1)


class Team:
    """The cluster, the raster and the stand-in captioning servers of one benchmark run."""

    def __init__(self, folder: Path, tiles: int, answer_s: float):
        from fixtures_server import start_scripted_server
        from rasters import write_raster
        from tilescribe.devtools.pg_cluster import Cluster

        self.folder, self.answer_s = folder, answer_s
        cols = max(1, tiles // 4)
        self.raster = write_raster(folder / "ortho.tif", width=TILE * cols, height=TILE * 4, crs="EPSG:32618")
        self.tiles = cols * 4
        # The searchers' index: 4x the tiles, so the 2 indexers are still writing while 8 searchers search.
        self.big_raster = write_raster(folder / "big.tif", width=TILE * cols * 4, height=TILE * 4, crs="EPSG:32618")
        self.cluster = Cluster().start()
        self.servers = []
        for _ in range(4):
            server, thread = start_scripted_server()
            server.serial = True  # one slot: a machine's captioning engine answers one tile at a time
            server.script = self._reply
            self.servers.append((server, thread))
        self._answers = 0

    def _reply(self, seen):
        from fixtures_server import Reply, completion

        self._answers += 1
        return Reply(200, completion(1, tag=f"tile {self._answers} "), delay_s=self.answer_s)

    def close(self) -> None:
        for server, thread in self.servers:
            server.stopping.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self.cluster.stop()

    def database(self, name: str, **params: str) -> str:
        return self.cluster.url(self.cluster.create_database(name), **params)

    def sql(self, url: str, query: str, params=()) -> list[tuple]:
        import psycopg

        database = url.split("@/", 1)[1].split("?", 1)[0]
        with psycopg.connect(host=str(self.cluster.folder), port=self.cluster.port, user="postgres",
                             dbname=database, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def indexer(self, url: str, number: int, log: Path, raster: Path | None = None) -> subprocess.Popen:
        server = self.servers[number % len(self.servers)][0]
        argv = ["index", raster or self.raster, "--db", url, "--server", server.url, "--server-model", "tiny-vlm",
                "--parallel", 1, "--tile-size", TILE, "--variants", 1]
        env = dict(os.environ, TILESCRIBE_TEST_CAPTION_LOG=str(log))
        return subprocess.Popen([sys.executable, str(REPO / "tests" / "cli_harness.py"), *map(str, argv)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def done(self, url: str) -> int:
        if not self.sql(url, "select to_regclass('tilescribe.tiles')")[0][0]:
            return 0
        return self.sql(url, "select count(*) from tilescribe.tiles where status = 'done'")[0][0]


def tiles_per_hour(team: Team, processes: int) -> dict:
    """n indexers on a fresh index: wall time, and the rate between the first and the last tile stored."""
    url = team.database(f"rate_{processes}")
    log = team.folder / f"rate_{processes}.log"
    started = time.perf_counter()
    procs = [team.indexer(url, n, log) for n in range(processes)]
    first = last = None
    while any(p.poll() is None for p in procs):
        done = team.done(url)
        now = time.perf_counter()
        if done and first is None:
            first = (now, done)
        if done == team.tiles and last is None:
            last = now
        time.sleep(0.1)
    wall = time.perf_counter() - started
    errors = [(p.stderr.read() if p.stderr else "")[-400:] for p in procs if p.returncode]
    last = last or time.perf_counter()
    stored = team.done(url)
    rate = 0.0
    if first is not None:
        rate = (stored - first[1]) / max(1e-9, last - first[0]) * 3600
    return {"processes": processes, "tiles": stored, "wall_s": round(wall, 1),
            "tiles_per_hour": round(rate), "errors": errors}


def killed_midway(team: Team, lease_s: float) -> dict:
    """4 indexers, one SIGKILLed holding a claim; the rest (and one more after the lease) finish."""
    url = team.database("killed", lease=str(lease_s))
    log = team.folder / "killed.log"
    procs = [team.indexer(url, n, log) for n in range(4)]
    victim = procs[0]
    me = f"{socket.gethostname()}:{victim.pid}"
    while True:
        state = team.sql(url, "select count(*) filter (where done_by = %(me)s), count(*) filter (where claimed_by ="
                         " %(me)s and status = 'pending') from tilescribe.tiles", {"me": me}) if team.done(url) else []
        if state and state[0][0] >= 2 and state[0][1] >= 1:
            break
        if victim.poll() is not None:
            raise RuntimeError(f"the indexer to kill ended first: {victim.stderr.read() if victim.stderr else ''}")
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    held = {key for (key,) in team.sql(url, "select tile_key from tilescribe.tiles where claimed_by = %s and"
                                       " status = 'pending'", (me,))}
    for proc in procs[1:]:
        proc.wait()
    finisher = 0
    if team.sql(url, "select count(*) from tilescribe.tiles where status != 'done'")[0][0]:
        time.sleep(lease_s)  # the others finished before the dead one's lease lapsed: one more indexer
        extra = team.indexer(url, 1, log)
        extra.wait()
        finisher = 1
    calls: dict[str, list[int]] = {}
    for line in log.read_text().splitlines():
        pid, key = line.split()
        calls.setdefault(key, []).append(int(pid))
    twice = sorted(key for key, pids in calls.items() if len(pids) > 1)
    statuses = dict(team.sql(url, "select status, count(*) from tilescribe.tiles group by status"))
    captions, distinct = team.sql(url, "select count(*), count(distinct tile_id) from tilescribe.captions")[0]
    return {"tiles": team.tiles, "statuses": statuses, "caption_rows": captions, "tiles_with_captions": distinct,
            "held_by_the_killed_one": sorted(held), "sent_to_the_captioner_twice": twice,
            "twice_only_what_it_held": set(twice) <= held, "finisher_runs": finisher, "lease_s": lease_s,
            "every_tile_done_once": statuses == {"done": team.tiles} and captions == distinct == team.tiles}


def searchers(team: Team, url: str, count: int, queries: int) -> dict:
    """`count` searcher processes at once, `queries` searches each: latency percentiles and errors."""
    procs = [subprocess.Popen([sys.executable, __file__, "--searcher", url, "--queries", str(queries)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    seconds, errors = [], []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            errors.append(err.strip()[-300:])
            continue
        result = json.loads(out)
        seconds += result["seconds"]
        errors += result["errors"]
    p50, p95 = _percentiles(seconds) if seconds else (None, None)
    return {"searchers": count, "searches": len(seconds), "p50_ms": p50, "p95_ms": p95, "errors": errors}


def searching_while_writing(team: Team, queries: int) -> dict:
    url = team.database("shared")
    reader = team.cluster.url(url.split("@/", 1)[1].split("?", 1)[0], user="ts_team_reader")
    log = team.folder / "shared.log"
    writers = [team.indexer(url, n, log, team.big_raster) for n in range(2)]
    while team.done(url) < 8:
        time.sleep(0.1)
    for statement in ("create role ts_team_reader login", "grant usage on schema tilescribe to ts_team_reader",
                      "grant select on all tables in schema tilescribe to ts_team_reader"):
        team.sql(url, statement)
    before = team.done(url)
    during = searchers(team, reader, 8, queries)
    during["tiles_stored_meanwhile"] = team.done(url) - before
    during["indexers_still_writing_at_the_end"] = sum(w.poll() is None for w in writers)
    for writer in writers:
        writer.wait()
    alone = searchers(team, reader, 1, queries)
    idle = searchers(team, reader, 8, queries)
    return {"8_searchers_2_indexers": during, "1_searcher_no_indexer": alone, "8_searchers_no_indexer": idle,
            "reader_cannot_write": reader_cannot_write(reader)}


def reader_cannot_write(reader: str) -> str:
    """The reader role opens the index writable and tries to write: PostgreSQL's refusal, as the user sees it."""
    from tilescribe.plugin.core.errors import TileScribeError
    from tilescribe.plugin.core.index.opening import open_index

    try:
        with open_index(reader) as store:
            store.set_raster_state(store.runs()[0].id, "a reader's write")
    except TileScribeError as exc:
        return f"refused: {str(exc).splitlines()[0][:200]}"
    return "WROTE (the role may write: check its grants)"


def search_loop(url: str, queries: int) -> int:
    """A child: one reader session searching `queries` times back to back (as an analyst's QGIS does)."""
    from fakes import HashingEmbedder
    from tilescribe.plugin.core.index.opening import open_index
    from tilescribe.plugin.core.search.search import SearchRequest, search

    embedder, seconds, errors = HashingEmbedder(), [], []
    with open_index(url, readonly=True) as store:
        for n in range(queries):
            started = time.perf_counter()
            try:
                hits = search(store, embedder, SearchRequest(QUERIES[n % len(QUERIES)], k=10))
                if not hits:
                    errors.append("no hits")
            except Exception as exc:  # measured, not raised: the figure is how many there were
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "errors": errors}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=48, help="tiles of the raster (rounded to a multiple of 4)")
    parser.add_argument("--answer-s", type=float, default=0.5, help="seconds a captioning server takes per tile")
    parser.add_argument("--lease", type=float, default=4.0, help="lease of the kill test, seconds")
    parser.add_argument("--queries", type=int, default=40, help="searches per searcher process")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--searcher", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.searcher:
        return search_loop(args.searcher, args.queries)
    with tempfile.TemporaryDirectory(prefix="tilescribe-team-") as tmp:
        team = Team(Path(tmp), args.tiles, args.answer_s)
        try:
            result = {"tiles": team.tiles, "answer_s": args.answer_s, "load_average_before": os.getloadavg()}
            rates = []
            for processes in (1, 2, 4):
                rates.append(tiles_per_hour(team, processes))
                _say(f"{processes} indexer(s): {rates[-1]}")
            result["indexers"] = rates
            result["killed_midway"] = killed_midway(team, args.lease)
            _say(f"killed mid-way: {result['killed_midway']}")
            result["search"] = searching_while_writing(team, args.queries)
            result["load_average_after"] = os.getloadavg()
        finally:
            team.close()
    if args.json:
        print(json.dumps(result, indent=2, default=sorted))
    else:
        _print(result)
    return 0


def _print(result: dict) -> None:
    print(f"{result['tiles']} tiles of 64 px; each indexer's captioning server answers one tile at a time in "
          f"{result['answer_s']} s; load average before {result['load_average_before']}")
    base = result["indexers"][0]["tiles_per_hour"] or 1
    for row in result["indexers"]:
        times = row["tiles_per_hour"] / base
        print(f"  {row['processes']} indexer(s): {row['tiles_per_hour']:,} tiles/hour ({times:.2f}x one), "
              f"wall {row['wall_s']} s, errors {len(row['errors'])}")
    kill = result["killed_midway"]
    print(f"  4 indexers, one SIGKILLed: statuses {kill['statuses']}, {kill['caption_rows']} caption rows on "
          f"{kill['tiles_with_captions']} tiles; held when killed {kill['held_by_the_killed_one']}; captioned twice "
          f"{kill['sent_to_the_captioner_twice']}; every tile done once: {kill['every_tile_done_once']}")
    search = result["search"]
    during = search["8_searchers_2_indexers"]
    print(f"  while the searchers ran, the 2 indexers stored {during['tiles_stored_meanwhile']} tiles "
          f"({during['indexers_still_writing_at_the_end']} still writing when they finished)")
    for name in ("8_searchers_2_indexers", "1_searcher_no_indexer", "8_searchers_no_indexer"):
        row = search[name]
        print(f"  {name}: {row['searches']} searches, p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, "
              f"errors {len(row['errors'])}")
    print(f"  reader role writing: {search['reader_cannot_write']}")
    print(f"  load average after {result['load_average_after']}")


if __name__ == "__main__":
    sys.exit(main())
