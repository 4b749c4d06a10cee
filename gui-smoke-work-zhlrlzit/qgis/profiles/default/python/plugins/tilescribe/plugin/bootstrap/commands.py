"""Run one setup command: every line to the log file, each to a callback, cancellable at any time."""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

TAIL_LINES = 25
POLL_S = 0.2


class SetupError(RuntimeError):
    """A setup step failed: the message names the step and what to do; `tail` holds the log's
    last lines and `log` the log's path."""

    def __init__(self, message: str, tail: Sequence[str] = (), log: Optional[Path] = None):
        super().__init__(message)
        self.tail = list(tail)
        self.log = log

    def details(self) -> str:
        lines = "\n".join(self.tail) if self.tail else "(no output)"
        where = f"\n\nThe whole log: {self.log}" if self.log else ""
        return f"{self}\n\nLast lines of the log:\n{lines}{where}"


class SetupCancelled(SetupError):
    """The user cancelled; what was installed stays, a repair continues from there."""


class CommandLog:
    """The setup's log file (appended: a repair keeps the history) and the current run's tail."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, line: str) -> None:
        line = line.rstrip("\n")
        self.tail.append(line)
        self._file.write(line + "\n")
        self._file.flush()

    def section(self, title: str) -> None:
        self.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}")

    def close(self) -> None:
        self._file.close()

    def error(self, message: str, cancelled: bool = False) -> SetupError:
        return (SetupCancelled if cancelled else SetupError)(message, list(self.tail), self.path)


def run_command(argv: Sequence[str], log: CommandLog, env: dict, on_line: Callable[[str], None],
                cancelled: Callable[[], bool], cwd: Optional[Path] = None) -> int:
    """The command's exit code; raises SetupCancelled (after stopping it) when cancelled() turns true."""
    log.write("$ " + subprocess.list2cmdline([str(a) for a in argv]))
    flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0
    process = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                               env=env, cwd=str(cwd) if cwd else None, creationflags=flags,
                               start_new_session=sys.platform != "win32")  # cancel stops a compiler too
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        _follow(process, lines, log, on_line, cancelled)
    except BaseException:  # cancelled, Ctrl-C in the command line, a bug: never leave pip running
        _stop(process)
        reader.join(5.0)
        raise
    reader.join()
    return process.wait()


def _follow(process, lines: queue.Queue, log: CommandLog, on_line, cancelled) -> None:
    while True:
        if cancelled():
            raise log.error("Set up was cancelled.", cancelled=True)
        try:
            line = lines.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if line is None:
            return
        log.write(line)
        on_line(line)


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    stream.close()
    lines.put(None)


def _stop(process: subprocess.Popen) -> None:
    """Stop the command and what it started (pip's build runs cmake and the compiler)."""
    _signal(process, "SIGTERM")
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _signal(process, "SIGKILL")
        process.wait()


def _signal(process: subprocess.Popen, name: str) -> None:
    if sys.platform == "win32":
        process.kill()  # TerminateProcess; the build's children end with their pipe
        return
    try:
        os.killpg(process.pid, getattr(signal, name))  # its own session: only what it started
    except ProcessLookupError:
        pass
