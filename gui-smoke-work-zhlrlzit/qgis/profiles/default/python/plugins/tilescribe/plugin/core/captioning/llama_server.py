"""Starts, watches and stops one llama.cpp `llama-server` process that only we can use.

It listens on 127.0.0.1 on a free port and wants a random API key made at each start,
so no other local user or web page can use it. The key reaches it in a file only the
user can read (0600, in a 0700 folder of our own; `--api-key-file`), removed once the
server has read it (on the command line any local user could read it in /proc/PID/cmdline).
It dies with the process that started it (Linux: the kernel's parent-death signal; elsewhere
atexit), so a killed worker or QGIS never leaves a model loaded in memory.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import REBUILD_ADVICE, EngineError, ModelError, describe_exit, is_native_crash
from . import defaults

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 600.0  # loading a 7B model from a slow disk takes minutes
WAIT_REPORT_S = 10.0  # while loading: a line on stderr this often (it said nothing for up to 600 s)
PORT_TRIES = 3  # another program may take the free port before llama-server binds it
STOP_GRACE_S = 5.0
_LOG_TAIL = 15
# Built-in llama-server templates for families whose GGUFs often carry none (else the
# GGUF's own). Always with --no-jinja: in jinja mode llama-server parses every answer for
# tool calls and answers HTTP 500 "does not match the expected peg-native format" when a
# weak model's text trips that parser; a built-in template there also lost the image marker.
SERVER_TEMPLATES = {"llava-1-5": "vicuna", "llava-1-6": "vicuna"}
# Families whose format llama.cpp has no built-in template for, and whose GGUFs carry none (the
# server would fall back to ChatML): their own Jinja template, run with --jinja. moondream2's
# format, as llama-cpp-python's MoondreamChatHandler writes it: "<image>\n\nQuestion: ...\n\nAnswer:".
SERVER_JINJA_TEMPLATES = {
    "moondream": (
        "{% for message in messages %}"
        "{% if message['role'] == 'user' %}"
        "{% if message['content'] is string %}Question: {{ message['content'] }}\n\n"
        "{% else %}"
        "{% for part in message['content'] %}{% if part['type'] != 'text' %}{{ part['text'] }}\n\n{% endif %}"
        "{% endfor %}Question: "
        "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}\n\n"
        "{% endif %}"
        "{% elif message['role'] == 'assistant' %}Answer:{{ message['content'] }}\n\n"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}Answer:{% endif %}"),
}
_live: "weakref.WeakSet[LlamaServer]" = weakref.WeakSet()


def find_llama_server(configured: Optional[str] = None) -> Path:
    """The llama-server to run: the one configured, $TILESCRIBE_LLAMA_SERVER, the one setup
    built into this environment, or one on PATH; ModelError saying how to get one."""
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return Path(configured)
        raise ModelError(f"The llama-server program {configured} does not exist or cannot be run: "
                         "give the path of llama.cpp's llama-server (--llama-server, or the setting).")
    candidates = [os.environ.get("TILESCRIBE_LLAMA_SERVER"), str(Path(sys.prefix) / "bin" / "llama-server"),
                  str(Path(sys.prefix) / "Scripts" / "llama-server.exe"),  # a Windows environment
                  shutil.which("llama-server")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ModelError(
        "llama.cpp's llama-server was not found (not built into this environment, not on PATH): run "
        "`make setup` (it builds one), install llama.cpp from your package manager, or give its path "
        "with --llama-server; or use --engine llama-cpp-python.")


@dataclass
class ServerOptions:
    model: Path
    mmproj: Path
    slots: int = defaults.SLOTS
    ctx_per_slot: int = 4096
    threads: Optional[int] = None
    gpu_layers: int = 0
    chat_template: Optional[str] = None
    jinja_template: Optional[str] = None  # a Jinja template's text: run with --jinja instead of --no-jinja
    extra_args: Sequence[str] = field(default_factory=tuple)


class LlamaServer:
    """One llama-server child process; `url` and `api_key` are valid while it runs."""

    def __init__(self, binary: Path, options: ServerOptions, *, health_timeout_s: float = HEALTH_TIMEOUT_S,
                 api_key: Optional[str] = None):
        self.binary, self.options, self.health_timeout_s = Path(binary), options, health_timeout_s
        self._fixed_key = api_key  # None: a new random key at every start
        self.process: Optional[subprocess.Popen] = None
        self.url = ""
        self.api_key = ""
        self.starts = 0
        self._log_dir = tempfile.mkdtemp(prefix="tilescribe-llama-server-")
        self._log_path = Path(self._log_dir) / "llama-server.log"
        self._key_path = Path(self._log_dir) / "api-key"  # mkdtemp made the folder 0700
        self._lock = threading.Lock()
        _live.add(self)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "LlamaServer":
        """Start the process and wait until it has loaded the model (ModelError if it cannot)."""
        with self._lock:
            for attempt in range(1, PORT_TRIES + 1):
                try:
                    self._start_locked()
                    break
                except _PortTaken as taken:
                    if attempt == PORT_TRIES:
                        raise ModelError(
                            f"llama-server could not listen on 127.0.0.1:{taken.port}: another program took the "
                            f"port ({PORT_TRIES} free ports tried, each taken before llama-server could bind "
                            "it). Close programs that open many local ports, or start llama-server yourself "
                            "and use --server URL.") from None
        return self

    def _start_locked(self) -> None:
        self._stop_locked()
        port = _free_port()
        self.api_key = self._fixed_key or secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{port}"
        command = self.command(port)
        self._write_key_file()
        log = self._log_path.open("ab")
        self._log_start = self._log_path.stat().st_size
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        except OSError as exc:
            self._remove_key_file()
            raise ModelError(f"Cannot start {self.binary}: {exc}. Check that it is a llama-server "
                             "built for this machine (or run `make setup`).") from exc
        finally:
            log.close()
        self.starts += 1
        try:
            self._wait_healthy(port)
        finally:
            self._remove_key_file()  # read at start: no need to keep it on disk

    def _write_key_file(self) -> None:
        """The key, for this user only: a new file (never through a link planted in its place)."""
        self._remove_key_file()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self._key_path, flags, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.api_key + "\n")

    def _remove_key_file(self) -> None:
        try:
            self._key_path.unlink()
        except FileNotFoundError:
            pass

    def command(self, port: int) -> list[str]:
        o = self.options
        command = [str(self.binary), "-m", str(o.model), "--mmproj", str(o.mmproj),
                   "--host", "127.0.0.1", "--port", str(port), "--api-key-file", str(self._key_path),
                   "-np", str(o.slots), "-c", str(o.ctx_per_slot * o.slots), "--no-webui",
                   "-ngl", str(o.gpu_layers)]
        if o.threads:
            command += ["-t", str(o.threads)]
        if o.jinja_template:
            template = Path(self._log_dir) / "chat-template.jinja"
            template.write_text(o.jinja_template, "utf-8")
            return command + ["--jinja", "--chat-template-file", str(template)] + list(o.extra_args)
        command.append("--no-jinja")
        if o.chat_template:
            command += ["--chat-template", o.chat_template]
        return command + list(o.extra_args)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def _stop_locked(self) -> None:
        self._remove_key_file()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # -- what it says -----------------------------------------------------------------------

    def log_tail(self) -> str:
        try:
            lines = self._log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return ""
        interesting = [line for line in lines if line.strip()]
        return "\n".join(collections.deque(interesting, maxlen=_LOG_TAIL))

    def props(self) -> dict:
        """llama-server's /props (build, slots, context), for the run record and the log."""
        return json.loads(self._get("/props", timeout=10))

    def _wait_healthy(self, port: int = 0) -> None:
        started = time.monotonic()
        deadline, next_report = started + self.health_timeout_s, started + WAIT_REPORT_S
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.process.returncode if self.process else None
                self.process = None
                if _bind_failed(self._log_since_start()):
                    raise _PortTaken(port)
                advice = REBUILD_ADVICE if is_native_crash(code) else \
                    "Check the model files, the context size and free memory."
                raise ModelError(
                    f"llama-server stopped while loading {self.options.model.name} ({describe_exit(code)}; "
                    f"exit status {code}). It said:\n{self.log_tail()}\n{advice}")
            try:
                self._get("/health", timeout=5)
                return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # another program answers on this port: not ours
                    self._stop_locked()
                    raise _PortTaken(port) from None
            except (OSError, ValueError):
                pass
            if time.monotonic() >= next_report:
                next_report += WAIT_REPORT_S
                log.warning("waiting for llama-server to load %s: %.0f s so far (gives up after %.0f s; its log: %s)",
                            self.options.model.name, time.monotonic() - started, self.health_timeout_s,
                            self._log_path)
            time.sleep(0.2)
        self._stop_locked()
        raise ModelError(f"llama-server did not finish loading {self.options.model.name} within "
                         f"{self.health_timeout_s:.0f} s. It said:\n{self.log_tail()}")

    def _log_since_start(self) -> str:
        try:
            with self._log_path.open("rb") as handle:
                handle.seek(getattr(self, "_log_start", 0))
                return handle.read(1 << 16).decode("utf-8", "replace")
        except OSError:
            return ""

    def _get(self, path: str, timeout: float) -> bytes:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.api_key}"})
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return response.read(1 << 20)

    def ensure_running(self, reason: str) -> None:
        """Restart a server that died mid-run, once; EngineError the second time."""
        if self.alive():
            return
        if self.starts >= 2:
            raise EngineError(
                f"llama-server stopped again ({reason}) after a restart: captioning cannot go on. Indexed "
                f"tiles are kept; run again to continue. It said:\n{self.log_tail()}" +
                (f"\n{REBUILD_ADVICE}" if "killed by SIG" in reason else ""))
        self.start()


class _PortTaken(Exception):
    """llama-server could not bind the port chosen for it (another program took it): try another."""

    def __init__(self, port: int):
        super().__init__(port)
        self.port = port


def _bind_failed(log: str) -> bool:
    return "couldn't bind HTTP server socket" in log or "Address already in use" in log


# A local server must never be reached through the user's HTTP proxy.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the parent dies (Linux prctl), even by SIGKILL.

    The kernel watches the thread that started the child: start and use the server from
    the same thread (the indexing job's), as the CLI and the worker do.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.close()
