"""JSON-lines worker process: the QGIS side reaches the models only through it.

Requests come one per line on stdin: {"id": 1, "cmd": "search", ...}. Replies go to
stdout: {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error":
{"type": ..., "message": ...}}; an index job also sends {"id": 1, "event":
"progress", "data": {...}} lines. Indexing runs in a thread, so searches, captions
and `cancel` are answered while it runs. When stdin closes (the client went away)
a running job is cancelled, commits what it has, and the worker exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional

PROTOCOL_VERSION = 1
FAST_CACHE_RUNS = 64  # warm fast-search indexes kept (a project search warms one per medium run)...
FAST_CACHE_BYTES = 1 << 30  # ...within this much memory (~300 bytes per vector: about 3.5M vectors)

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, out):
        self._out = out
        self._write_lock = threading.Lock()
        self._embedders: dict = {}
        self._fast_cache = None  # FastIndexCache, made at the first search
        self._stores = None  # StorePool of the indexes a project search keeps open
        self._opened: set[str] = set()  # index files named in requests: tidied (-wal, -shm) at the end
        self._memory_runs = None  # MemoryRuns: vectors of medium runs, for project searches
        self._jobs: dict[object, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self.handlers: dict[str, Callable[[dict], object]] = {
            "hello": self.hello, "info": self.info, "runs": self.runs, "search": self.search,
            "similar": self.similar, "tile_at": self.tile_at, "captions": self.captions, "cancel": self.cancel,
            "import_captions": self.import_captions,
        }

    # -- plumbing ---------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        from ..core.terminal_text import json_for_terminal

        # Strict JSON: a damaged tile box is null, never Infinity; control characters escaped (same data).
        line = json_for_terminal(message, ensure_ascii=False)
        with self._write_lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the client is gone; jobs notice stdin closing

    def serve(self, lines) -> None:
        for line in lines:
            if not line.strip():
                continue
            request = None
            try:  # the worker's one error boundary: no request line, however malformed, ends the loop
                request = _parse(line)
                if request.get("cmd") == "shutdown":
                    self.send({"id": _reply_id(request), "ok": True, "result": None})
                    break
                self.dispatch(request)
            except Exception as exc:
                from ..core.errors import ProtocolError

                rid = _reply_id(request) if isinstance(request, dict) else None
                if isinstance(exc, ProtocolError):
                    self._error(rid, exc)
                else:
                    self._internal(rid, exc)
        self.stop_jobs()

    def dispatch(self, request: dict) -> None:
        from .protocol import ProtocolError, check_request

        try:
            check_request(request, {*self.handlers, "index"})
            for path in [request.get("db"), *(request.get("dbs") or [])]:  # checked: text, list of text
                if isinstance(path, str) and path.endswith(".sqlite"):  # tidied when the worker stops
                    self._opened.add(os.path.realpath(path))
            if request["cmd"] == "index":
                self._start_index(request.get("id"), request)
                return
        except ProtocolError as exc:
            self._error(_reply_id(request), exc)
            return
        rid, cmd = request.get("id"), request.get("cmd")
        handler = self.handlers[cmd]
        self._reply(rid, lambda: handler(request), request.get("db"))

    def _reply(self, rid, call, db=None) -> None:
        import sqlite3

        from ..core.errors import TileScribeError
        from ..core.index.sqlite_errors import read_failure, write_failure

        try:
            self.send({"id": rid, "ok": True, "result": call()})
        except TileScribeError as exc:
            self._error(rid, exc)
        except sqlite3.Error as exc:  # the CLI's message for the same failure, with its type
            failure = (read_failure(db, exc) or write_failure(db, exc)) if db else None
            if failure is None:
                self._internal(rid, exc)
            else:
                self._error(rid, failure)
        except Exception as exc:  # report, keep serving: one bad request must not kill the worker
            self._internal(rid, exc)

    def _error(self, rid, exc: Exception) -> None:
        self.send({"id": rid, "ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}})

    def _internal(self, rid, exc: Exception) -> None:
        log.error("request %s failed", rid, exc_info=exc)
        self.send({"id": rid, "ok": False, "error": {"type": "InternalError", "message": repr(exc)}})

    def stop_jobs(self) -> None:
        for event in self._jobs.values():
            event.set()
        for thread in self._threads:
            thread.join()
        opened = set(self._opened)
        if self._stores is not None:
            opened.update(self._stores.close())
            self._stores = None
        from ..core.index.store import Store

        for path in sorted(opened):
            # Our connections were read-only: none could remove the -wal and -shm that SQLite keeps
            # beside an index in use, and they stayed there after QGIS quit (issue 20).
            Store.tidy(path)

    # -- commands ---------------------------------------------------------------------------

    def hello(self, request: dict) -> dict:
        import importlib.util

        modules = ("llama_cpp", "sentence_transformers", "sqlite_vec", "rasterio", "numpy", "PIL")
        return {
            "protocol": PROTOCOL_VERSION,
            "python": sys.executable,
            "pid": os.getpid(),
            "modules": {name: importlib.util.find_spec(name) is not None for name in modules},
        }

    def embedder(self, folder: Optional[str]):
        """Embedders stay loaded between requests: a query then costs milliseconds."""
        if folder not in self._embedders:
            from ..core.embedding import SentenceTransformerEmbedder

            self._embedders[folder] = SentenceTransformerEmbedder(folder)
        return self._embedders[folder]

    def fast_cache(self):
        """Fast-search indexes of large runs stay warm between queries, like the embedders."""
        if self._fast_cache is None:
            from ..core.search.fast_cache import FastIndexCache

            # Bounded by count and by size: a project's many medium runs, or one or two huge ones.
            self._fast_cache = FastIndexCache(max_runs=FAST_CACHE_RUNS, max_bytes=FAST_CACHE_BYTES)
        return self._fast_cache

    def memory_runs(self):
        """Medium runs' vectors in RAM (bounded: MEMORY_RUNS_BYTES), so a project search reads no file."""
        if self._memory_runs is None:
            from ..core.search.project import MemoryRuns

            self._memory_runs = MemoryRuns()
        return self._memory_runs

    def stores(self):
        """Index files a project search opened stay open between queries (least recently used closed)."""
        if self._stores is None:
            from ..core.search.project import StorePool

            self._stores = StorePool()
        return self._stores

    def info(self, request: dict) -> dict:
        from ..core.index.opening import open_index
        from ..core.index.summary import index_summary

        with open_index(request["db"], readonly=True) as store:
            return index_summary(store)

    def runs(self, request: dict) -> list:
        """The index's runs for the dock's run picker: cheap reads only (info counts every vector)."""
        from ..core.index.opening import open_index
        from ..core.index.summary import run_choices

        with open_index(request["db"], readonly=True) as store:
            return run_choices(store)

    def search(self, request: dict) -> list:
        from ..core.index.opening import open_index
        from ..core.search.search import SearchRequest, check_query, search
        from .request_fields import build

        wanted = build(SearchRequest, request, exclude=("exclude_tiles",))  # its fields: protocol.FIELDS
        check_query(wanted.query, wanted.k)  # before the index is opened or a model loaded
        if request.get("dbs") is not None or request.get("db") is None:
            return self._search_project(request, wanted)
        with open_index(request["db"], readonly=True) as store:
            hits = search(store, self.embedder(request.get("embedder")), wanted, self.fast_cache())
            return [dict(hit.to_json(), tile_db_id=hit.tile_db_id) for hit in hits]

    def _search_project(self, request: dict, wanted) -> list:
        from ..core.errors import ProtocolError
        from ..core.search.project import search_project

        if request.get("dbs") is None:
            raise ProtocolError("search: give field 'db' (one index) or 'dbs' (several)")
        if request.get("db") is not None:
            raise ProtocolError("search: give 'db' or 'dbs', not both")
        if request.get("run_id") is not None:
            raise ProtocolError("search: 'run_id' picks a run of one 'db'; 'dbs' searches each raster's latest run")
        result = search_project(
            request["dbs"], self.embedder(request.get("embedder")), wanted,
            pool=self.stores(), fast_cache=self.fast_cache(), memory=self.memory_runs(),
            other_embedders=_given(request, "other_embedders", "refuse"), extent_crs=request.get("extent_crs"))
        if result.skipped:  # before the reply: a client that asked to skip says what was left out, and why
            self.send({"id": request.get("id"), "event": "left_out",
                       "data": {"notes": result.skipped, "other_embedders": result.other_embedders}})
        return [dict(hit.to_json(), tile_db_id=hit.tile_db_id) for hit in result.hits]

    def similar(self, request: dict) -> list:
        from ..core.search.search import SearchRequest, similar_tiles
        from ..core.index.opening import open_index

        with open_index(request["db"], readonly=True) as store:
            hits = similar_tiles(store, request["tile_db_id"], _given(request, "k", SearchRequest.k),
                                 self.fast_cache())
            return [dict(hit.to_json(), tile_db_id=hit.tile_db_id) for hit in hits]

    def tile_at(self, request: dict) -> Optional[dict]:
        from ..core.search.search import resolve_run, tile_at
        from ..core.index.opening import open_index

        with open_index(request["db"], readonly=True) as store:
            run = resolve_run(store, request.get("run_id"))
            tile_db_id = tile_at(store, run.id, float(request["x"]), float(request["y"]))
            return None if tile_db_id is None else _tile_record(store, tile_db_id)

    def captions(self, request: dict) -> Optional[dict]:
        from ..core.index.opening import open_index

        with open_index(request["db"], readonly=True) as store:
            return _tile_record(store, request["tile_db_id"])

    def import_captions(self, request: dict) -> dict:
        """Captions written elsewhere (JSONL) into an index, embedded here (Processing's Import captions)."""
        from ..core.indexing.importer import import_captions
        from ..core.index.opening import open_index

        rid = request.get("id")

        def progress(done: int, total: int) -> None:
            self.send({"id": rid, "event": "progress", "data": {"finished": done, "total": total}})

        with open_index(request["db"], create=True) as store:
            report = import_captions(store, self.embedder(request.get("embedder")), request["raster"],
                                     request["captions"], tile_size=request.get("tile_size"),
                                     overlap=_given(request, "overlap", 0), progress=progress)
        return {"run_id": report.run_id, "imported": report.imported, "already_done": report.already_done,
                "bad_lines": [list(line) for line in report.bad_lines[:50]]}

    def cancel(self, request: dict) -> bool:
        event = self._jobs.get(request.get("target"))
        if event is not None:
            event.set()
        return event is not None

    def _start_index(self, rid, request: dict) -> None:
        from ..core.errors import ProtocolError

        if rid in self._jobs:  # it would take over the running job's cancel (issue 22)
            raise ProtocolError(f"index: a job with id {rid!r} is already running: give each job its own id "
                                "(cancel it first, or wait for its reply)")
        stop = threading.Event()
        self._jobs[rid] = stop
        thread = threading.Thread(target=self._run_index, args=(rid, request, stop), name=f"index-{rid}")
        self._threads.append(thread)
        thread.start()

    def _run_index(self, rid, request: dict, stop: threading.Event) -> None:
        try:
            self._reply(rid, lambda: self._index(rid, request, stop), request.get("db"))
        finally:
            self._jobs.pop(rid, None)

    def _index(self, rid, request: dict, stop: threading.Event) -> dict:
        from ..core.captioning.factory import CaptionerSettings, make_captioner
        from ..core.indexing.index_settings import KEYS, IndexSettings
        from ..core.indexing.indexer import index_raster
        from ..core.index.opening import open_index

        settings = CaptionerSettings.from_dict(request.get("captioner") or {"test_model": True})
        index_settings = IndexSettings.from_dict({key: request[key] for key in KEYS if key in request})
        embedder = self.embedder(request.get("embedder"))
        self.send({"id": rid, "event": "status", "data": {"message": "loading the captioning model"}})
        captioner = make_captioner(settings)
        from ..core.captioning.engine_info import describe_engine

        engine = describe_engine(captioner)
        self.send({"id": rid, "event": "status", "data": {
            "message": f"captioning with {engine}", "engine": engine,
            "warnings": list(getattr(captioner, "warnings", ()))}})
        try:
            with open_index(request["db"], create=True) as store:
                report = index_raster(store, captioner, embedder, request["raster"], index_settings,
                                      progress=lambda p: self._progress(rid, p), cancel=stop.is_set)
        finally:
            captioner.close()
        return {"run_id": report.run_id, "cancelled": report.cancelled, "placeholder": settings.is_placeholder,
                "engine": engine,
                **_progress_data(report.progress), "failures": report.failures[:20]}

    def _progress(self, rid, progress) -> None:
        self.send({"id": rid, "event": "progress", "data": _progress_data(progress)})


def _parse(line: str) -> dict:
    from ..core.errors import ProtocolError

    try:
        request = json.loads(line)
    except RecursionError:  # json's decoder recurses per nesting level
        raise ProtocolError("the request is nested too deeply to be a request") from None
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    if not isinstance(request, dict):
        raise ProtocolError("a request is a JSON object")
    return request


def _reply_id(request: dict):
    """The id to answer with: the request's own when it is a valid id, else null (never `Infinity`)."""
    from .protocol import _request_id

    rid = request.get("id")
    return rid if _request_id(rid) is None else None


def _given(request: dict, name: str, default):
    """An optional field's value: absent and null both mean the default (protocol.FIELDS)."""
    value = request.get(name)
    return default if value is None else value


def _progress_data(p) -> dict:
    return {"run_id": p.run_id, "total": p.total, "done": p.done, "skipped": p.skipped,
            "failed": p.failed, "finished": p.finished, "captioned_now": p.captioned_now,
            "tiles_per_s": p.tiles_per_s, "eta_s": p.eta_s, "last_tile": p.last_tile}


def _tile_record(store, tile_db_id: int) -> Optional[dict]:
    tile = store.tile(tile_db_id)
    if tile is None:
        return None
    return {"tile_db_id": tile.id, "tile_id": tile.window.key, "run_id": tile.run_id,
            "window": tile.window.as_list(), "bbox": list(tile.bbox), "status": tile.status,
            "reason": tile.reason, "captions": [v.to_dict() for v in store.captions_of(tile.id)]}


def protocol_stream():
    """stdout for protocol lines only: native libraries that print go to stderr instead."""
    protocol_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


class Terminated(Exception):
    """SIGTERM arrived: raised in the main thread, out of the blocking read of stdin."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Before any library starts OpenMP: busy-waiting threads starve the threads that
    # sample under the grammar and answer searches (measured 4-10x slower when loaded).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Messages go to stderr, which the QGIS side keeps to quote when the worker fails.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="tilescribe worker: %(levelname)s: %(message)s")
    worker = Worker(protocol_stream())
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        worker.send({"id": None, "event": "ready", "data": {"protocol": PROTOCOL_VERSION, "pid": os.getpid()}})
        worker.serve(sys.stdin)
    except Terminated:  # like Ctrl-C in the command line: running jobs stop after the tile in progress
        log.warning("terminated (SIGTERM): stopping after the tile in progress; captioned tiles are kept, "
                    "and indexing the same raster again continues where it stopped.")
        worker.send({"id": None, "event": "terminated", "data": {"jobs": len(worker._jobs)}})
        worker.stop_jobs()
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
