"""The dock's latency as a user feels it: Enter in the query box until the list and the highlight are painted.

Usage: .venv/bin/python scripts/bench_dock.py [--vectors 10000,1000000] [--queries 30]
       .venv/bin/python scripts/bench_dock.py --project [--small 20] [--small-vectors 10000]
                                              [--large 1000000] [--queries 30]

For each size it builds (once, cached in build/bench-dock/) a synthetic index of that many
caption vectors (devtools/bench/synthetic.py), opens it in the real dock of the plugin
(offscreen QGIS, a real QgsMapCanvas with the layer tree bridge), warms the worker, then for
each query types it, presses Enter and waits until the search task has ended, the results
list has painted and the canvas has finished drawing the highlight layer. Beside it, on the
same warm worker: the worker alone (one `search` request) and the baseline of the old flow
(`info`, whose count(*) scans the vectors, then `search`). Prints p50/p95 of each.

--project: the project search (issue 20). The dock lists 20 indexes of 10k vectors plus one of
1M (scripts/bench_project_search.py's builders and cache, build/bench-project/), all ticked,
and times Enter-to-painted over all of them, next to the 1M index ticked alone, in alternating
blocks of queries on the same warm worker; beside each, the worker alone (one `search`
request with `dbs`, or with `db`). Prints p50/p95 of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before the first Qt import

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
CACHE = ROOT / "build" / "bench-dock"
QUERIES = ["a bridge over a river", "an airplane parked at an airport", "dense forest", "a harbour with boats",
           "a baseball field", "a parking lot full of cars", "a sandy beach", "farmland with crops",
           "a freeway interchange", "houses with swimming pools", "a golf course", "storage tanks",
           "a runway", "tennis courts", "a river bend", "mobile homes", "an overpass", "a dense residential area",
           "a chaparral slope", "a lake shore"]


def synthetic_index(n_vectors: int) -> Path:
    from tilescribe.devtools.bench.synthetic import build_synthetic_index

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"synthetic-{n_vectors}.tilescribe.sqlite"
    if not path.is_file():
        print(f"building {path.name} (once)…", flush=True)
        partial = path.with_suffix(".partial")
        for stale in CACHE.glob(partial.name + "*"):
            stale.unlink()
        index = build_synthetic_index(partial, n_vectors)
        for suffix in ("-wal", "-shm"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)
        partial.rename(path)
        print(f"  built in {index.build_s:.0f} s", flush=True)
    return path


class PaintCounter:
    """Counts paint events of a widget (the results list's viewport)."""

    def __init__(self, widget):
        from qgis.PyQt.QtCore import QEvent, QObject

        counter = self

        class Filter(QObject):
            def eventFilter(self, _obj, event):
                if event.type() == QEvent.Paint:
                    counter.count += 1
                return False

        self.count = 0
        self.filter = Filter()
        widget.installEventFilter(self.filter)


def pump(app, condition, timeout_s: float = 60.0) -> None:
    """Run the event loop until `condition()`; it sleeps between events as QGIS's does (a busy loop
    here would take a core from the worker and count as the GUI's share). A 1 ms timer wakes it."""
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    ticker = QTimer()
    ticker.start(1)
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the dock did not finish in time")
        app.processEvents(QEventLoop.WaitForMoreEvents)
    ticker.stop()


def dock_search(app, plugin, canvas, painted: PaintCounter, query: str) -> float:
    """Seconds from Enter until the list is painted with the hits and the canvas has drawn them."""
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtTest import QTest

    edit = plugin.dock.queryEdit
    edit.clear()
    QTest.keyClicks(edit, query)
    starts, paints = [0], painted.count
    count_start = lambda: starts.__setitem__(0, starts[0] + 1)  # noqa: E731
    canvas.renderStarting.connect(count_start)
    started = time.perf_counter()
    QTest.keyClick(edit, Qt.Key_Return)
    pump(app, lambda: not plugin.runner.tasks)  # finished() has filled the list and the results layer
    if not plugin.dock.hits:
        raise RuntimeError(f"no results: {plugin.dock.statusLabel.text()}")
    shown = starts[0]  # a render started before this cannot show the new results
    pump(app, lambda: starts[0] > shown and not canvas.isDrawing() and painted.count > paints)
    seconds = time.perf_counter() - started
    canvas.renderStarting.disconnect(count_start)
    return seconds


def worker_search(client, db: str, run_id: int, query: str, k: int, with_info: bool) -> float:
    started = time.perf_counter()
    if with_info:
        client.request("info", db=db)  # what every search, similar and tile_at asked first before
    client.request("search", db=db, query=query, k=k, run_id=run_id)
    return time.perf_counter() - started


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


def bench_size(app, plugin, canvas, n_vectors: int, n_queries: int) -> dict:
    from tilescribe.plugin.qgis.highlight import zoom_to

    db = str(synthetic_index(n_vectors))
    plugin.dock.open_index_file(db)
    pump(app, lambda: not plugin.runner.tasks and plugin.dock.current_run() is not None, 600)
    run = plugin.dock.current_run()
    client, k = plugin.client(), plugin.dock.k()
    client.request("search", db=db, query=QUERIES[0], k=k, run_id=run.id, mode="fast")  # fast index loaded
    painted = PaintCounter(plugin.dock.resultsList.viewport())
    dock_search(app, plugin, canvas, painted, QUERIES[0])
    zoom_to(canvas, [hit.rectangle() for hit in plugin.dock.hits], canvas.mapSettings().destinationCrs())
    queries = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(n_queries)]
    dock, worker, old = [], [], []
    for number, query in enumerate(queries):  # interleaved: a busy machine slows all three alike
        dock.append(dock_search(app, plugin, canvas, painted, query))
        worker.append(worker_search(client, db, run.id, query, k, False))
        if number % 3 == 0:
            old.append(worker_search(client, db, run.id, query, k, True))
    return {"vectors": run.vectors, "dock": percentiles(dock), "worker": percentiles(worker),
            "old_worker": percentiles(old)}


def tick_all(app, plugin, dbs: list[str]) -> None:
    for db in dbs:
        plugin.dock.tick_db(db)
    pump(app, lambda: not plugin.runner.tasks)


def bench_project(app, plugin, canvas, args) -> dict:
    """Enter-to-painted over every index of the project, then over the large one ticked alone, in
    alternating blocks (a busy machine slows both alike); the worker's share beside each."""
    from bench_project_search import build
    from tilescribe.plugin.qgis.highlight import zoom_to

    large, _ = build(args.large, seed=1000, n_queries=50)
    dbs = [str(build(args.small_vectors, seed=s, n_queries=10)[0]) for s in range(args.small)] + [str(large)]
    for db in dbs:
        plugin.dock.open_index_file(db)
    pump(app, lambda: not plugin.runner.tasks, 600)
    dbs = [str(Path(db).resolve()) for db in dbs]
    assert plugin.dock.selected_dbs() == dbs, "every index listed and ticked"
    client, k = plugin.client(), plugin.dock.k()
    # Warm, as after the first query in QGIS: the 1M run's fast index built, the 10k runs in RAM.
    client.request("search", dbs=dbs, query=QUERIES[0], k=k, mode="fast", other_embedders="skip")
    painted = PaintCounter(plugin.dock.resultsList.viewport())
    for query in QUERIES[:3]:
        dock_search(app, plugin, canvas, painted, query)
    zoom_to(canvas, [hit.rectangle() for hit in plugin.dock.hits], canvas.mapSettings().destinationCrs())
    queries = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(args.queries)]
    timings: dict[str, list[float]] = {"project": [], "project_worker": [], "alone": [], "alone_worker": []}
    alone_run = None
    block = 5
    for start in range(0, len(queries), block):
        tick_all(app, plugin, dbs)
        for query in queries[start:start + block]:
            timings["project"].append(dock_search(app, plugin, canvas, painted, query))
            t = time.perf_counter()
            client.request("search", dbs=dbs, query=query, k=k, other_embedders="skip")
            timings["project_worker"].append(time.perf_counter() - t)
        plugin.dock.select_db(dbs[-1])
        pump(app, lambda: not plugin.runner.tasks and plugin.dock.current_run() is not None, 600)
        alone_run = plugin.dock.current_run()
        for query in queries[start:start + block]:
            timings["alone"].append(dock_search(app, plugin, canvas, painted, query))
            timings["alone_worker"].append(worker_search(client, dbs[-1], alone_run.id, query, k, False))
    return {"indexes": len(dbs), "large_vectors": alone_run.vectors if alone_run else 0,
            **{name: percentiles(values) for name, values in timings.items()}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", default="10000,1000000", help="comma-separated index sizes")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--project", action="store_true",
                        help="20 x 10k + 1M indexes searched together, next to the 1M index alone")
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--small-vectors", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    from qgis.testing import start_app

    app = start_app(cleanup=False)  # exitQgis() at exit can crash; nothing is left to clean
    import tilescribe
    from screenshots import make_iface

    iface = make_iface()
    plugin = tilescribe.classFactory(iface)
    plugin.initGui()
    plugin.dock.setUserVisible(True)
    if args.project:
        row = bench_project(app, plugin, iface.mapCanvas(), args)
        print(f"\nEnter -> list and highlight painted, warm worker, k={plugin.dock.k()}, {args.queries} queries "
              f"each, load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
        print(f"{'searched':>44} {'dock p50':>9} {'dock p95':>9} {'worker p50':>11} {'worker p95':>11}")
        for name, label in (("project", f"{row['indexes']} indexes ({args.small} x {args.small_vectors:,} + "
                                        f"{row['large_vectors']:,})"),
                            ("alone", f"the {row['large_vectors']:,} index alone")):
            (d50, d95), (w50, w95) = row[name], row[f"{name}_worker"]
            print(f"{label:>44} {d50:>7.0f}ms {d95:>7.0f}ms {w50:>9.0f}ms {w95:>9.0f}ms")
        sys.stdout.flush()
        plugin.unload()
        os._exit(0)
    rows = [bench_size(app, plugin, iface.mapCanvas(), int(n), args.queries) for n in args.vectors.split(",")]
    print(f"\nEnter -> list and highlight painted, warm worker, k={plugin.dock.k()}, {args.queries} queries")
    print(f"{'vectors':>10} {'dock p50':>9} {'dock p95':>9} {'worker p50':>11} {'worker p95':>11} "
          f"{'GUI share p50':>14} {'old info+search p50':>20}")
    for row in rows:
        (d50, d95), (w50, w95), (o50, _) = row["dock"], row["worker"], row["old_worker"]
        print(f"{row['vectors']:>10,} {d50:>7.0f}ms {d95:>7.0f}ms {w50:>9.0f}ms {w95:>9.0f}ms "
              f"{d50 - w50:>12.0f}ms {o50:>18.0f}ms")
    sys.stdout.flush()
    plugin.unload()  # stops the worker
    os._exit(0)  # the offscreen QGIS app's teardown can crash at exit (exit 139): nothing is left to save


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
