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
from pathlib import Path
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SERVER_START_S = 90  # loading the tiny pair takes a second or two; a loaded CI box more


@dataclass
class Reply:
    """One scripted answer; status None drops the connection without answering.

    Misbehaviours: `trickle_s` sends the answer one byte at a time with this pause;
    `endless` sends a chunked body that never ends (a 4 KiB chunk every trickle_s); `drop_after` sends that many bytes
    of the answer, then drops the connection.
    """

    status: int | None = 200
    body: bytes | str | dict = b""
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    trickle_s: float = 0.0
    endless: bool = False
    drop_after: int | None = None


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
        # Replies in order, the last repeated; or a function of the request giving its reply.
        self.script: list[Reply] | Callable[[Seen], Reply] = [Reply()]
        self.seen: list[Seen] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # cuts scripted delays short at teardown
        self.killed = False
        # One request at a time, like llama_cpp.server: each holds the server for delay_s,
        # even when its client has gone (the server does not notice).
        self.serial = False
        self._queue = threading.Condition()
        self._tickets = self._serving = 0  # first come, first served, as its queue does
        self.clients_gone = 0  # answers nobody read any more: work wasted on abandoned requests
        self.models: list[str] | None = None  # GET /v1/models lists these; None: 404, as servers without it

    def one_at_a_time(self, work) -> None:
        with self._queue:
            ticket, self._tickets = self._tickets, self._tickets + 1
            self._queue.wait_for(lambda: self._serving == ticket or self.stopping.is_set())
        try:
            work()
        finally:
            with self._queue:
                self._serving += 1
                self._queue.notify_all()

    def kill(self) -> None:
        """Like a killed process: stops listening, and every request under way is dropped."""
        self.killed = True
        self.stopping.set()
        self.shutdown()
        self.server_close()

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
            if callable(self.script):
                return self.script(seen)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def done(self) -> None:
        with self.lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models") and self.server.models is not None:
            data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"}
                                                          for m in self.server.models]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            data = b'{"error": "not found"}'
            self.send_response(404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
        if self.server.serial:
            self.server.one_at_a_time(lambda: self._wait(reply.delay_s))
        else:
            self._wait(reply.delay_s)
        if reply.status is None or self.server.killed:
            self._drop()
            return
        data = reply.body
        if isinstance(data, dict):
            data = json.dumps(data)
        data = data.encode("utf-8") if isinstance(data, str) else data
        headers = {"Content-Type": "application/json", **reply.headers}
        head = [f"HTTP/1.1 {reply.status} Scripted"] + [f"{k}: {v}" for k, v in headers.items()]
        head.append("Transfer-Encoding: chunked" if reply.endless else f"Content-Length: {len(data)}")
        head = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.close_connection = True
        try:
            self._send(head, b"" if reply.endless else data, reply)
            if reply.endless:
                while not self.server.stopping.is_set():
                    self.wfile.write(b"1000\r\n" + b" " * 0x1000 + b"\r\n")
                    self.server.stopping.wait(reply.trickle_s or 0.001)
        except OSError:
            with self.server.lock:
                self.server.clients_gone += 1  # the client timed out and left: what the test wanted

    def _send(self, head: bytes, data: bytes, reply: Reply) -> None:
        if reply.endless or not (reply.drop_after is not None or reply.trickle_s):
            self.wfile.write(head)
            self.wfile.write(data)  # not joined: a huge test answer is not copied here
            return
        wire = head + data
        if reply.drop_after is not None:
            self.wfile.write(wire[:reply.drop_after])
            self.wfile.flush()
            self._drop()
        elif reply.trickle_s:
            for i in range(len(wire)):
                if self.server.stopping.is_set():
                    return
                self.wfile.write(wire[i:i + 1])
                self.wfile.flush()
                time.sleep(reply.trickle_s)

    def _wait(self, seconds: float) -> None:
        if seconds:
            self.server.stopping.wait(seconds)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)  # a reset, as a crashing server gives
        except OSError:
            pass

    def log_message(self, *args):
        pass  # keep pytest output clean


@pytest.fixture
def scripted_server():
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    _stop(server, thread)


def _stop(server: ScriptedServer, thread: threading.Thread) -> None:
    server.stopping.set()
    if not server.killed:
        server.shutdown()
        server.server_close()
    thread.join(timeout=5)


def start_scripted_server() -> tuple[ScriptedServer, threading.Thread]:
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def scripted_servers():
    """A function that starts another scripted server; all are stopped after the test."""
    started = []

    def start() -> ScriptedServer:
        started.append(start_scripted_server())
        return started[-1][0]
    yield start
    for server, thread in started:
        _stop(server, thread)


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


def completion(n: int = 1, tokens=42, tag: str = "") -> dict:
    """A well-formed chat completion whose content holds `n` distinct valid variants."""
    variants = [
        {"one_sentence": f"fields and a road {tag}{i}", "feature": f"a road runs north to south {tag}{i}",
         "caption": f"green fields split by a grey road {tag}{i}"}
        for i in range(n)
    ]
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps({"variants": variants})},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 52},
    }


def variants_asked(seen: Seen) -> int:
    """How many variants a captioning request asks for (from its schema or its prompt)."""
    fmt = seen.body.get("response_format") or {}
    schema = fmt.get("json_schema", {}).get("schema") or fmt.get("schema")
    if schema:
        return schema["properties"]["variants"]["minItems"]
    text = next(p["text"] for p in seen.body["messages"][0]["content"] if p["type"] == "text")
    return int(text.split("Write ", 1)[1].split()[0])


FAKE_LLAMA_SERVER = Path(__file__).with_name("fake_llama_server.py")


@pytest.fixture
def fake_llama_server(tmp_path) -> Path:
    """A stand-in llama-server program (tests/fake_llama_server.py): starts in a blink, no model."""
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_LLAMA_SERVER} \"$@\"\n")
    binary.chmod(0o755)
    return binary


@pytest.fixture
def fake_server_options(tmp_path):
    """ServerOptions for the stand-in: placeholder model files, one slot."""
    from tilescribe.plugin.core.captioning.llama_server import ServerOptions

    model, mmproj = tmp_path / "m.gguf", tmp_path / "p.gguf"
    model.write_bytes(b"GGUF")
    mmproj.write_bytes(b"GGUF")
    return ServerOptions(model, mmproj, slots=1)
