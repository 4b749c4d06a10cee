"""Benchmark (not CI): tiles per second over 1, 2 and 3 local servers that answer one request
at a time in a fixed time, like a GPU box with one slot. The baseline is the 1-server run
of the same invocation. Only 127.0.0.1 is contacted.

    nice .venv/bin/python scripts/bench_http_endpoints.py --tiles 60 --answer-s 0.1   (after make setup)
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures_models import png_bytes  # noqa: E402
from fixtures_server import Reply, completion, start_scripted_server  # noqa: E402

from tilescribe.plugin.core.captioning.http_backend import OpenAICompatibleCaptioner  # noqa: E402


def measure(servers: list, tiles: int, parallel: int) -> tuple[float, list[dict]]:
    cap = OpenAICompatibleCaptioner([s.url for s in servers], "bench", parallel_requests=parallel, timeout_s=30)
    png = png_bytes(64, 64, lambda x, y: (x * 4 % 256, y * 4 % 256, 90))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cap.parallel_requests) as pool:
        list(pool.map(lambda _: cap.caption(png, 2), range(tiles)))
    return time.perf_counter() - started, cap.stats()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=60)
    parser.add_argument("--answer-s", type=float, default=0.1, help="seconds a server takes per answer")
    parser.add_argument("--parallel", type=int, default=4, help="--parallel (per server)")
    args = parser.parse_args()
    started = [start_scripted_server() for _ in range(3)]
    for server, _ in started:
        server.serial = True
        server.script = [Reply(200, completion(2), delay_s=args.answer_s)]
    baseline = None
    print(f"{args.tiles} tiles, servers answering one request at a time in {args.answer_s:g} s, "
          f"--parallel {args.parallel}")
    for count in (1, 2, 3):
        seconds, stats = measure([s for s, _ in started[:count]], args.tiles, args.parallel)
        rate = args.tiles / seconds
        baseline = baseline or rate
        sent = sum(s["sent"] for s in stats)
        print(f"  {count} server(s): {seconds:6.2f} s, {rate:6.1f} tiles/s ({rate / baseline:.2f}x the "
              f"1-server run), {sent} requests, {sum(s['abandoned'] for s in stats)} abandoned")
    for server, thread in started:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
