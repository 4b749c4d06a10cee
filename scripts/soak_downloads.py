"""Soak test (not CI): several `tilescribe models download` processes of one model at once, against a
local fake hub with a slow link, some SIGKILLed at random and the download run again, round after round.

Each round starts 3 downloads of the same pair into a new models folder at once, kills some of them
at random moments (mid-file: the link is throttled), then downloads again until one finishes. Checks:
the installed files are whole and their sha256 is the hub's; a download that could not own the
folder was refused with a reason (exit 2), never left a mixed file; `models verify` passes; no
partial file is left once a download finished. Prints a summary; exits 1 when a check failed.
Only 127.0.0.1 is contacted.

    nice .venv/bin/python scripts/soak_downloads.py --minutes 5   (after make setup)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from fake_hub import FakeHub  # noqa: E402

REPO = "soak/smollm2-tiny-mmproj-GGUF"


def served_pair(folder: Path) -> dict:
    """{file name: bytes}: SmolLM2-135M (98 MB, a real GGUF) and a tiny projector that matches it."""
    from tilescribe.plugin.core.captioning.tiny_gguf import smollm2_model_path, write_tiny_pair

    text, mmproj = write_tiny_pair(folder, text_model=smollm2_model_path())
    return {text.name: text.read_bytes(), mmproj.name: mmproj.read_bytes()}


def download(hub: FakeHub, names: list, folder: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    return subprocess.Popen([sys.executable, "-m", "tilescribe.plugin.cli", "models", "download", REPO,
                             "--files", *names, "--dir", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def check_folder(folder: Path, served: dict) -> list:
    problems = []
    for name, data in served.items():
        found = [p for p in folder.rglob(name) if p.is_file() and ".partial" not in str(p) and ".part" not in p.name]
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} installed copies in {folder}")
            continue
        if hashlib.sha256(found[0].read_bytes()).hexdigest() != hashlib.sha256(data).hexdigest():
            problems.append(f"{name}: installed bytes differ from the hub's ({found[0].stat().st_size} "
                            f"vs {len(data)} bytes)")
    leftovers = [str(p) for p in folder.rglob("*") if p.is_file() and (p.name.endswith((".part", ".partial"))
                                                                      or ".partial" in p.parts)]
    if leftovers:
        problems.append(f"partial files left after a finished download: {leftovers[:3]}")
    verify = subprocess.run([sys.executable, "-m", "tilescribe.plugin.cli", "models", "verify", str(folder)],
                            capture_output=True, text=True)
    if verify.returncode != 0:
        problems.append(f"models verify exit {verify.returncode}: {verify.stdout[-300:]} {verify.stderr[-300:]}")
    return problems


def one_round(hub: FakeHub, served: dict, folder: Path, rng: random.Random, counts) -> list:
    names = list(served)
    procs = [download(hub, names, folder) for _ in range(3)]
    for proc in procs:
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.2, 3.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                counts["killed"] += 1
    problems = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            counts["finished"] += 1
        elif proc.returncode == 2 and "Another download" in (out + err):
            counts["refused (another download running)"] += 1
        elif proc.returncode == -signal.SIGKILL:
            pass
        else:
            problems.append(f"a download ended with exit {proc.returncode}: {(out + err)[-400:]}")
    for _ in range(5):  # run it again until it finishes: a resume, or an install that is already whole
        again = download(hub, names, folder)
        out, err = again.communicate(timeout=600)
        if again.returncode == 0:
            counts["finished (again)"] += 1
            break
    else:
        problems.append(f"the download never finished in {folder}: {(out + err)[-400:]}")
    return problems + check_folder(folder, served)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate-mb", type=float, default=30.0, help="the fake link's speed in MB/s (default 30)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng, counts, problems = random.Random(args.seed), collections.Counter(), []
    with tempfile.TemporaryDirectory(prefix="tilescribe-soak-downloads-") as work:
        served = served_pair(Path(work) / "served")
        hub = FakeHub(rate=int(args.rate_mb * 1e6))
        for name, data in served.items():
            hub.add(REPO, name, data)
        hub.start()
        deadline, rounds = time.monotonic() + args.minutes * 60, 0
        try:
            while time.monotonic() < deadline:
                rounds += 1
                found = one_round(hub, served, Path(work) / f"models-{rounds}", rng, counts)
                problems += [f"round {rounds}: {p}" for p in found]
                print(f"round {rounds}: {dict(counts)}{' PROBLEMS' if found else ''}", flush=True)
        finally:
            hub.stop()
    print(f"soak: {rounds} rounds, {dict(counts)}; {len(problems)} problems")
    for problem in problems[:20]:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
