"""The model download as a QgsTask: runs `tilescribe models download --progress json` in the worker's
Python and follows its events.

A separate process rather than a worker request: huggingface_hub (and its network stack) never
loads into QGIS, the long-lived worker stays offline (HF_HUB_OFFLINE, read once at import), and
cancelling is a signal to the process; what it fetched stays on disk and the next run resumes it.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..core.errors import ModelError
from .tasks import TaskResult
from ..worker.client import worker_environment

CLI_MODULE = "tilescribe.plugin.cli"
STOP_WAIT_S = 15.0


def download_command(python: Path, name: str, models_dir: str, files: Sequence[str] = ()) -> list:
    """`name`: a catalogue name, or OWNER/REPO with `files` (the model and its projector)."""
    command = [str(python), "-u", "-m", CLI_MODULE, "models", "download", name, "--progress", "json"]
    command += ["--files", *files] if files else []
    return command + (["--dir", models_dir] if models_dir.strip() else [])


def download_environment(plugin_dir: Path) -> dict:
    """The worker's environment, but online unless the user's own environment says offline."""
    env = worker_environment(plugin_dir)
    if "HF_HUB_OFFLINE" in os.environ:
        env["HF_HUB_OFFLINE"] = os.environ["HF_HUB_OFFLINE"]
    else:
        env.pop("HF_HUB_OFFLINE", None)
    return env


def describe(event: dict) -> Optional[str]:
    """A status line for the dialog, from one event of the download."""
    from ..core.models.catalogue import format_size

    kind = event.get("event")
    if kind == "file":
        resumed = f", resuming at {format_size(event['resume_from'])}" if event.get("resume_from") else ""
        return f"Downloading {event['file']} ({format_size(event.get('size'))}{resumed})"
    if kind == "progress":
        return (f"{event['file']}: {format_size(event['done'])} of {format_size(event.get('size'))} "
                f"({format_size(event.get('bytes_per_s'))}/s)")
    if kind == "verify":
        return f"Checking the hash of {event['file']}"
    if kind == "present":
        return f"{event['file']} is already downloaded"
    if kind == "checked" and event.get("by") == "size":
        return (f"{event['file']}: only its size could be checked (the hub at {event.get('endpoint')} gave "
                "no content hash)")
    if kind == "cached":
        return f"{event['file']} taken from the Hugging Face cache"
    return None


class ModelDownloadTask(QgsTask):
    """Cancellable; `status` carries a line per event to the GUI thread; result.value is the
    `done` event (folder, model, mmproj, family)."""

    status = pyqtSignal(str)

    def __init__(self, python: Path, plugin_dir: Path, name: str, models_dir: str,
                 on_done: Callable[[TaskResult], None], files: Sequence[str] = ()):
        super().__init__(f"TileScribe: downloading {name}", QgsTask.CanCancel)
        self.command = download_command(python, name, models_dir, files)
        self.python, self.plugin_dir, self.on_done = Path(python), Path(plugin_dir), on_done
        self.result = TaskResult()

    def run(self) -> bool:
        if not self.python.is_file():
            self.result.error = ModelError(f"The Python that runs TileScribe's worker was not found: "
                                           f"{self.python}. Fix it in TileScribe's settings.")
            return False
        flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0
        try:
            popen = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     encoding="utf-8", errors="replace", env=download_environment(self.plugin_dir),
                                     creationflags=flags)
        except OSError as exc:
            self.result.error = ModelError(f"Cannot run {self.python}: {exc}.")
            return False
        stderr = collections.deque(maxlen=20)
        events: queue.Queue = queue.Queue()
        readers = [_reader(popen.stdout, events.put), _reader(popen.stderr, stderr.append)]
        self._follow(popen, events)
        for reader in readers:
            reader.join(5.0)
        self.result.cancelled = self.isCanceled()
        if popen.returncode != 0 and not self.result.cancelled:
            self.result.error = ModelError(_error_text(stderr, popen.returncode))
        return self.result.error is None

    def _follow(self, popen: subprocess.Popen, events: queue.Queue) -> None:
        """Handles events until the process ends; interrupts it once when the task is cancelled."""
        interrupted = False
        while True:
            try:
                line = events.get(timeout=0.1)
            except queue.Empty:
                if popen.poll() is not None and events.empty():
                    return
                if self.isCanceled() and not interrupted:
                    _interrupt(popen)
                    interrupted = True
                continue
            self._event(line)

    def _event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if event.get("event") == "progress" and event.get("all_total"):
            self.setProgress(100.0 * event["all_done"] / event["all_total"])
        if event.get("event") == "done":
            self.result.value = event
        text = describe(event)
        if text:
            self.status.emit(text)

    def finished(self, ok: bool) -> None:
        self.on_done(self.result)


def _reader(stream, sink) -> threading.Thread:
    def read():
        for line in stream:
            if line.strip():
                sink(line.rstrip("\n"))
    thread = threading.Thread(target=read, daemon=True, name="tilescribe-download-reader")
    thread.start()
    return thread


def _interrupt(popen: subprocess.Popen) -> None:
    """Ctrl-C for the download (it stops cleanly, keeping its partial file); kill if it lingers."""
    try:
        if sys.platform == "win32":
            popen.terminate()  # the partial file keeps what reached the disk: it is resumed too
        else:
            popen.send_signal(signal.SIGINT)
        popen.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def _error_text(stderr, returncode: int) -> str:
    """The command's own one-line error, else its last lines."""
    for line in reversed(stderr):
        if line.startswith("tilescribe: error: "):
            return line[len("tilescribe: error: "):]
    tail = "\n".join(list(stderr)[-5:]) or "(it printed nothing)"
    return f"The download stopped (exit code {returncode}). It said:\n{tail}"
