"""Client of the JSON-lines worker process: start, route replies by id, notice crashes, restart."""

from __future__ import annotations

import collections
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ..core.errors import REBUILD_ADVICE, TileScribeError, describe_exit, error_class, is_native_crash

WORKER_MODULE = "tilescribe.plugin.worker.server"
START_TIMEOUT_S = 60.0
POLL_S = 0.1

EventCallback = Callable[[str, dict], None]


class WorkerError(TileScribeError):
    """The worker answered a request with an error; `kind` is the worker's error type."""

    def __init__(self, message: str, kind: str = "WorkerError"):
        super().__init__(message)
        self.kind = kind


class WorkerUnavailable(WorkerError):
    """The worker's Python is missing, cannot start the worker, or lacks modules."""


class WorkerCrashed(WorkerError):
    """The worker process died while a request was in flight (a native crash, a kill)."""


class WorkerStopped(WorkerError):
    """The plugin stopped the worker (unload) while a request was in flight."""


class WorkerTimeout(WorkerError):
    """The worker did not answer in time."""


_REMOTE_CLASSES: dict[str, type] = {}


def remote_error(kind: str, message: str) -> WorkerError:
    """The worker's error as its core class (`except QueryError` works here too), still a WorkerError."""
    cls = _REMOTE_CLASSES.get(kind)
    if cls is None:
        core = error_class(kind)
        if core is None or issubclass(WorkerError, core) or issubclass(core, WorkerError):
            return WorkerError(message, kind)
        cls = _REMOTE_CLASSES[kind] = type(kind, (WorkerError, core), {"__module__": __name__})
    return cls(message, kind)


def worker_environment(plugin_dir: Path) -> dict:
    """The worker's environment: its own Python's paths, not QGIS's."""
    env = dict(os.environ)
    # QGIS (OSGeo4W, the macOS bundle) points PYTHONHOME/PYTHONPATH at its own Python:
    # another interpreter would load QGIS's compiled modules and fail.
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    root = import_root(plugin_dir)
    if root is not None:
        env["PYTHONPATH"] = str(root)
    env["PYTHONIOENCODING"] = "utf-8"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def import_root(plugin_dir: Path) -> Optional[Path]:
    """A folder from which `-m tilescribe...` imports this plugin in any Python.

    A ZIP install: the plugins folder. A checkout in a folder of another name (its package is
    installed with `pip install -e .` in its own .venv, but the worker may run another Python):
    a private folder holding a link named `tilescribe` to it. None where no link can be made.
    """
    plugin_dir = Path(plugin_dir)
    if plugin_dir.name == "tilescribe":
        return plugin_dir.parent
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(plugin_dir.resolve()).encode("utf-8")).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"tilescribe-{os.getuid() if hasattr(os, 'getuid') else 'user'}-{digest}"
    link = folder / "tilescribe"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o077 or folder.is_symlink()):
            return None  # made by someone else: never import code from a folder another user controls
        if not (link.is_symlink() and link.resolve() == plugin_dir.resolve()):
            tmp = folder / f"tilescribe.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(plugin_dir.resolve(), target_is_directory=True)
            os.replace(tmp, link)
    except OSError:
        return None
    return folder


# Each rewrites a request's fields just before its line is written to the worker's stdin pipe: the
# QGIS side adds a saved PostgreSQL connection's password to "db"/"dbs" here (qgis/postgres_connections.py),
# so that nothing else on the QGIS side holds it.
REQUEST_HOOKS: list[Callable[[dict], dict]] = []


class _Process:
    """One worker process: its pipes, reader threads and the requests waiting on it."""

    def __init__(self, python: Path, plugin_dir: Path):
        flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0
        self.popen = subprocess.Popen(
            [str(python), "-u", "-m", WORKER_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
            env=worker_environment(plugin_dir), creationflags=flags,
        )
        self.stderr_tail: collections.deque = collections.deque(maxlen=12)
        self.ready = threading.Event()
        self.exited = threading.Event()
        self.stopping = False
        self.hello: Optional[dict] = None
        self._inboxes: dict[int, queue.Queue] = {}
        self._inbox_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        # stderr's reader starts first: the stdout reader joins it when the process ends.
        self._stderr_reader = self._thread(self._read_stderr)
        self._thread(self._read_stdout)

    def _thread(self, target) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True, name=f"tilescribe{target.__name__}")
        thread.start()
        return thread

    @property
    def alive(self) -> bool:
        return not self.exited.is_set() and self.popen.poll() is None

    def send(self, cmd: str, args: dict, expect_reply: bool = True) -> tuple[int, queue.Queue]:
        rid, inbox = next(self._ids), queue.Queue()
        for hook in REQUEST_HOOKS:
            args = hook(args)
        if expect_reply:
            with self._inbox_lock:
                self._inboxes[rid] = inbox
        line = json.dumps({"id": rid, "cmd": cmd, **args}) + "\n"
        try:
            with self._write_lock:
                self.popen.stdin.write(line)
                self.popen.stdin.flush()
        except (OSError, ValueError):
            # The pipe broke: the process is exiting; its EOF reaches the inbox as a crash.
            self.exited.wait(5.0)
            inbox.put({"eof": True})
        return rid, inbox

    def forget(self, rid: int) -> None:
        with self._inbox_lock:
            self._inboxes.pop(rid, None)

    def _read_stdout(self) -> None:
        for line in self.popen.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                self.stderr_tail.append(line.rstrip())  # stray output: keep it for the crash report
                continue
            if message.get("id") is None and message.get("event") == "ready":
                self.ready.set()
                continue
            with self._inbox_lock:
                inbox = self._inboxes.get(message.get("id"))
            if inbox is not None:
                inbox.put(message)
        self._on_eof()

    def _on_eof(self) -> None:
        try:
            self.popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # closed stdout but lives on: it is no use to us
            self.popen.kill()
            self.popen.wait()
        self._stderr_reader.join(timeout=2.0)  # the crash report needs the last stderr lines
        self._close_pipes()
        self.exited.set()
        self.ready.set()  # wakes a start() still waiting
        with self._inbox_lock:
            inboxes, self._inboxes = list(self._inboxes.values()), {}
        for inbox in inboxes:
            inbox.put({"eof": True})

    def _close_pipes(self) -> None:
        with self._write_lock:
            try:
                self.popen.stdin.close()
            except OSError:  # a broken pipe refuses the final flush; the handle is closed anyway
                pass
        self.popen.stdout.close()
        if not self._stderr_reader.is_alive():
            self.popen.stderr.close()

    def _read_stderr(self) -> None:
        for line in self.popen.stderr:
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    def last_messages(self) -> str:
        return "\n".join(self.stderr_tail) or "(it printed nothing)"

    def stop(self, timeout: float) -> None:
        self.stopping = True
        if self.alive:
            try:
                self.send("shutdown", {}, expect_reply=False)
                self.popen.stdin.close()  # the worker cancels a running job and commits
            except (OSError, ValueError):
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.exited.wait(5.0)


def _settings_hint(python: Path, plugin_dir: Path) -> str:
    return "Check the worker Python in TileScribe's settings, or clear it to use the plugin's own environment."


class WorkerClient:
    """Thread-safe: requests may come from several tasks at once; each waits for its own reply."""

    def __init__(self, python: Path, plugin_dir: Path,
                 setup_hint: Optional[Callable[[Path, Path], str]] = None):
        self.python = Path(python)
        self.plugin_dir = Path(plugin_dir)
        # What to tell the user when the worker's Python fails: deps.setup_hint, passed in
        # (deps builds on this client; importing it here would make a cycle).
        self._setup_hint = setup_hint or _settings_hint
        self._process: Optional[_Process] = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> Optional[int]:
        process = self._process
        return process.popen.pid if process is not None and process.alive else None

    def running(self) -> bool:
        return self._process is not None and self._process.alive

    def _ensure_process(self) -> _Process:
        """The live process, started (or restarted after a crash) on demand."""
        with self._lock:
            if self._process is None or not self._process.alive:
                self._process = self._start()
            return self._process

    def _start(self) -> _Process:
        setup_hint = self._setup_hint
        if not self.python.is_file():
            raise WorkerUnavailable(
                f"The Python that runs the TileScribe worker was not found: {self.python}.\n\n"
                f"{setup_hint(self.python, self.plugin_dir)}", "WorkerUnavailable")
        try:
            process = _Process(self.python, self.plugin_dir)
        except OSError as exc:
            raise WorkerUnavailable(f"Cannot run {self.python}: {exc}.\n\n"
                                    f"{setup_hint(self.python, self.plugin_dir)}", "WorkerUnavailable") from exc
        if not process.ready.wait(START_TIMEOUT_S) or not process.alive:
            process.stop(1.0)
            raise WorkerUnavailable(
                f"The TileScribe worker did not start with {self.python}. It said:\n"
                f"{process.last_messages()}\n\n{setup_hint(self.python, self.plugin_dir)}",
                "WorkerUnavailable")
        return process

    def hello(self) -> dict:
        """The worker's `hello` (its Python and which modules import), asked once per process."""
        process = self._ensure_process()
        if process.hello is None:
            process.hello = self.request("hello", timeout=START_TIMEOUT_S)
        return process.hello

    def request(self, cmd: str, *, on_event: Optional[EventCallback] = None, timeout: Optional[float] = None,
                cancelled: Optional[Callable[[], bool]] = None, **args):
        """Send one request and wait for its result; events go to `on_event` in this thread.

        When `cancelled()` turns true, the worker is asked to cancel the request, and the
        request still waits for the worker's (partial) result.
        """
        process = self._ensure_process()
        rid, inbox = process.send(cmd, args)
        try:
            return self._wait(process, rid, inbox, cmd, on_event, timeout, cancelled)
        finally:
            process.forget(rid)

    def _wait(self, process: _Process, rid: int, inbox: queue.Queue, cmd: str,
              on_event, timeout, cancelled):
        deadline = None if timeout is None else time.monotonic() + timeout
        cancel_sent, last_progress = False, None
        while True:
            # Checked between messages too: a job that reports progress more often than POLL_S
            # would otherwise never hear the Cancel.
            if cancelled is not None and not cancel_sent and cancelled():
                process.send("cancel", {"target": rid}, expect_reply=False)
                cancel_sent = True
            try:
                message = inbox.get(timeout=POLL_S)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    raise WorkerTimeout(
                        f"The TileScribe worker did not answer '{cmd}' within {timeout:.0f} s.") from None
                continue
            if message.get("eof"):
                raise self._death_error(process, cmd, last_progress)
            if message.get("event") == "progress":
                last_progress = message.get("data") or {}
            if "event" in message:
                if on_event is not None:
                    on_event(message["event"], message.get("data") or {})
                continue
            if message.get("ok"):
                return message.get("result")
            error = message.get("error") or {}
            raise remote_error(error.get("type", "WorkerError"), error.get("message", "unknown error"))

    def _death_error(self, process: _Process, cmd: str, progress: Optional[dict] = None) -> WorkerError:
        if process.stopping:
            return WorkerStopped(f"TileScribe stopped its worker while '{cmd}' was running.", "WorkerStopped")
        code = process.popen.returncode
        where = ""
        if cmd == "index" and progress:  # the tile in flight is the one after the last finished
            where = (f", after tile {progress.get('last_tile') or '?'} ({progress.get('finished')} of "
                     f"{progress.get('total')} tiles finished)")
        elif cmd == "index":
            where = ", before its first tile was finished"
        advice = f" {REBUILD_ADVICE}" if is_native_crash(code) and code != -9 else ""  # SIGKILL: not our build
        return WorkerCrashed(
            f"The TileScribe worker stopped unexpectedly ({describe_exit(code)}) during '{cmd}'{where}.{advice}\n"
            f"Its last messages:\n{process.last_messages()}", "WorkerCrashed")

    def stop(self, timeout: float = 3.0) -> None:
        """Shut the worker down (a running index commits what it has); kill it if it lingers."""
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.stop(timeout)
