"""Fixtures: a scripted misbehaving HTTP server and a real llama_cpp.server, both on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SERVER_START_S = 90  # loading the tiny pair takes a second or two; a loaded CI box more


@dataclass
class Reply:
    """One scripted answer; status None drops the connection without answering."""

    status: int | None = 200
    body: bytes | str | dict = b""
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict
    body: dict


class ScriptedServer(ThreadingHTTPServer):
    """Answers POSTs with `script` in order, repeating its last reply; records every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Reply] = [Reply()]
        self.seen: list[Seen] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # cuts scripted delays short at teardown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address):
        pass  # scripted dropped connections and clients that timed out are expected

    def next_reply(self, seen: Seen) -> Reply:
        with self.lock:
            self.seen.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        reply = self.server.next_reply(Seen(self.path, dict(self.headers), body))
        try:
            self._answer(reply)
        finally:
            self.server.done()

    def _answer(self, reply: Reply) -> None:
        if reply.delay_s:
            self.server.stopping.wait(reply.delay_s)
        if reply.status is None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # a reset, as a crashing server gives
            return
        body = reply.body
        if isinstance(body, dict):
            body = json.dumps(body)
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass  # the client timed out and left: that is what the test wanted

    def log_message(self, *args):
        pass  # keep pytest output clean


@pytest.fixture
def scripted_server():
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def llama_server_command(model, mmproj, port: int) -> list[str]:
    """The command users run (see RECIPES.md), with this interpreter."""
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--clip_model_path", str(mmproj), "--chat_format", "llava-1-5",
        "--host", "127.0.0.1", "--port", str(port),
    ]


@pytest.fixture(scope="session")
def llama_server(tiny_pair, tmp_path_factory):
    """Base URL of a real llama_cpp.server serving the tiny random LLaVA pair."""
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            llama_server_command(*tiny_pair, port), stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_ready(url: str, process: subprocess.Popen, log_path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{tail}")
        try:
            with opener.open(f"{url}/v1/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(f"llama_cpp.server did not answer {url}/v1/models within {SERVER_START_S} s")
