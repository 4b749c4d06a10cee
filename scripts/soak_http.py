"""Soak test (not CI): `tilescribe index --server` against a local server that misbehaves at random,
with the indexer SIGKILLed at random times and resumed, round after round.

Each round indexes a small raster into a new index file until a run ends by itself with no
pending tile, then checks the file: `pragma integrity_check` ok, every tile done, skipped or
failed with a reason, each done tile with exactly `--variants` captions and vectors (none
captioned twice). Prints a summary; exits 1 when a check failed. Only 127.0.0.1 is contacted.

    nice .venv/bin/python scripts/soak_http.py --minutes 8   (after make setup)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from fixtures_server import Reply, Seen, completion, start_scripted_server, variants_asked  # noqa: E402
from index_checks import index_state  # noqa: E402
from rasters import write_raster  # noqa: E402

# Behaviour of the server, with its weight. Valid answers are the rest.
CHAOS = {
    "refuse-400": 3, "refuse-413": 1, "image-500": 2, "overloaded-503": 8, "junk-usage": 5,
    "malformed-json": 3, "drop": 4, "drop-mid-body": 3, "trickle": 2, "endless": 1, "huge": 1,
    "slow": 5, "valid": 62,
}
MAX_REQUESTS = 200_000  # a bound on what one soak may ask of the server
FINAL_RUN_S = 300  # a run that is not killed must end by itself within this


def chaos_reply(rng: random.Random, tally: collections.Counter):
    """The fake server's script: a random behaviour per request."""
    kinds, weights = zip(*CHAOS.items())

    def reply(seen: Seen) -> Reply:
        if sum(tally.values()) >= MAX_REQUESTS:
            return Reply(503, "soak request budget spent")
        kind = rng.choices(kinds, weights)[0]
        tally[kind] += 1
        good = completion(variants_asked(seen), tokens=rng.randint(50, 900), tag=f"{rng.random():.12f}-")
        if kind == "junk-usage":
            good["usage"]["completion_tokens"] = rng.choice(["n/a", None, -1, "12x", {"a": 1}])
        return {
            "refuse-400": Reply(400, {"error": {"message": "content filter: image rejected"}}),
            "refuse-413": Reply(413, "Request Entity Too Large"),
            "image-500": Reply(500, {"error": {"message": "failed to process image"}}),
            "overloaded-503": Reply(503, {"error": {"message": "server overloaded"}}, {"Retry-After": "0.2"}),
            "malformed-json": Reply(200, '{"choices": [{"message": {"content": "{\\"vari'),
            "drop": Reply(None),
            "drop-mid-body": Reply(200, good, drop_after=rng.randint(1, 200)),
            "trickle": Reply(200, good, trickle_s=0.02),
            "endless": Reply(200, b"", endless=True, trickle_s=0.001),
            "huge": Reply(200, json.dumps(good).replace('"object"', '"pad": "' + "x" * (4 << 20) + '", "object"')),
            "slow": Reply(200, good, delay_s=rng.uniform(0.3, 2.5)),
        }.get(kind, Reply(200, good))
    return reply


def index_command(raster: Path, db: Path, url: str, args) -> list[str]:
    return [sys.executable, "-m", "tilescribe.plugin.cli", "index", str(raster), "--db", str(db),
            "--server", url, "--server-model", "soak-vlm", "--variants", str(args.variants),
            "--tile-size", "32", "--parallel", str(args.parallel), "--timeout", str(args.timeout)]


def run_once(command: list[str], kill_after: float | None, log) -> str:
    """Runs the indexer; SIGKILLs it after `kill_after` s. 'killed' or 'exit N'."""
    process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        process.wait(timeout=kill_after if kill_after is not None else FINAL_RUN_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return "killed" if kill_after is not None else "hung (killed)"
    return f"exit {process.returncode}"


def tile_statuses(db: Path) -> collections.Counter:
    if not db.exists():
        return collections.Counter()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return collections.Counter(dict(conn.execute("select status, count(*) from tiles group by status")))
        except sqlite3.Error:
            return collections.Counter()  # killed before the schema was written


def check_round(db: Path, variants: int) -> tuple[collections.Counter, list[str], list[str]]:
    """Tile counts, failure reasons, and the problems found (none when the index is whole)."""
    problems = []
    try:
        state = index_state(db, variants)  # integrity_check, captions and vectors per tile
    except AssertionError as exc:
        return collections.Counter(), [], [f"{db.name}: {exc}"]
    counts = collections.Counter(status for status, _, _ in state.values())
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        reasons = [r for (r,) in conn.execute("select reason from tiles where status = 'failed'")]
    if counts["pending"]:
        problems.append(f"{db.name}: {counts['pending']} tiles still pending")
    if any(not r.strip() for r in reasons):
        problems.append(f"{db.name}: a failed tile without a reason")
    return counts, reasons, problems


def soak(args) -> int:
    rng = random.Random(args.seed)
    tally: collections.Counter = collections.Counter()
    server, _ = start_scripted_server()
    server.script = chaos_reply(rng, tally)
    work = Path(tempfile.mkdtemp(prefix="soak-http-"))
    raster = write_raster(work / "soak.tif", width=256, height=224, seed=args.seed)
    runs: collections.Counter = collections.Counter()
    tiles: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    problems: list[str] = []
    started = time.monotonic()
    deadline = started + args.minutes * 60
    rounds = 0
    with (work / "indexer.log").open("ab") as log:
        while time.monotonic() < deadline and not problems:
            rounds += 1
            db = work / f"round-{rounds}.tilescribe.sqlite"
            finished, tries = False, 0
            while not finished:
                tries += 1
                if time.monotonic() > deadline and tries > 20:
                    problems.append(f"round {rounds}: still pending tiles after {tries - 1} runs")
                    break
                killing = time.monotonic() < deadline and rng.random() < args.kill_rate
                outcome = run_once(index_command(raster, db, server.url, args),
                                   rng.uniform(1.0, args.kill_max_s) if killing else None, log)
                runs[outcome] += 1
                finished = outcome.startswith("exit") and not tile_statuses(db)["pending"]
                if outcome.startswith("hung") or runs["exit 70"]:
                    problems.append(f"round {rounds}: indexer {outcome}; see {work / 'indexer.log'}")
                    break
            counts, failed, found = check_round(db, args.variants)
            tiles.update(counts)
            reasons.update(_reason_kind(r) for r in failed)
            problems += found
    server.stopping.set()
    server.shutdown()
    _summary(args, time.monotonic() - started, rounds, runs, tiles, reasons, tally, problems, work)
    return 1 if problems else 0


def _reason_kind(reason: str) -> str:
    for words in ("HTTP 400", "HTTP 413", "HTTP 500", "not JSON", "too long", "failed this tile",
                  "no valid captions"):
        if words in reason:
            return words
    return reason[:60]


def _summary(args, seconds, rounds, runs, tiles, reasons, tally, problems, work) -> None:
    print(f"soak_http: {seconds / 60:.1f} min, seed {args.seed}, {rounds} rounds (index files), "
          f"{sum(runs.values())} indexer runs")
    print("  runs:     " + ", ".join(f"{k}: {v}" for k, v in sorted(runs.items())))
    print(f"  requests: {sum(tally.values())} = " + ", ".join(f"{k} {v}" for k, v in tally.most_common()))
    print("  tiles:    " + ", ".join(f"{k} {v}" for k, v in sorted(tiles.items())))
    print("  failed because: " + (", ".join(f"{k} x{v}" for k, v in reasons.most_common()) or "-"))
    print(f"  checks:   integrity_check, exactly {args.variants} captions+vectors per done tile, no pending "
          f"tile, every failure with a reason: {'OK' if not problems else 'FAILED'}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    print(f"  files:    {work}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=2.0, help="--timeout given to the indexer")
    parser.add_argument("--kill-rate", type=float, default=0.7, help="share of runs SIGKILLed")
    parser.add_argument("--kill-max-s", type=float, default=15.0, help="latest SIGKILL after start")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
