"""Issue 22: llama-server restart handoff, waiting with progress, a taken port named as such."""

from __future__ import annotations

import socket
import threading

import pytest

from tilescribe.plugin.core.captioning import llama_server
from tilescribe.plugin.core.captioning.llama_server import LlamaServer
from tilescribe.plugin.core.captioning.server_engine import LlamaServerCaptioner
from tilescribe.plugin.core.errors import ModelError

class _FakeServer:
    def __init__(self):
        self.up, self.process, self.starts = False, None, 1

    def alive(self):
        return self.up

    def ensure_running(self, reason):
        self.starts += 1
        self.up = True


def test_a_caption_thread_holding_the_old_client_picks_up_the_restarted_one():
    """Two tiles in flight when the server dies: one restarts it, the other must not re-raise the old error."""
    captioner = object.__new__(LlamaServerCaptioner)
    captioner.server, captioner._restart_lock = _FakeServer(), threading.Lock()
    a_restarted, calls = threading.Event(), []

    class Old:
        def caption(self, png, n):
            calls.append(png)
            if png == b"B":  # in flight on the old port; its error arrives after A restarted the server
                assert a_restarted.wait(10)
            raise ModelError("Cannot connect to the captioning server at http://127.0.0.1:1: connection refused")

    class New:
        def caption(self, png, n):
            return ("new", png)

    captioner._client = Old()
    captioner._connect = New
    result_b = []
    thread_b = threading.Thread(target=lambda: result_b.append(_try(captioner, b"B")))
    thread_b.start()
    while b"B" not in calls:
        pass
    assert captioner.caption(b"A", 2) == ("new", b"A")
    a_restarted.set()
    thread_b.join(10)
    assert result_b == [("new", b"B")] and captioner.server.starts == 2


def _try(captioner, png):
    try:
        return captioner.caption(png, 2)
    except ModelError as exc:
        return exc


def test_waiting_for_llama_server_to_load_says_so(fake_llama_server, fake_server_options, monkeypatch, caplog):
    """A warning (the command line and the worker show warnings on stderr) every WAIT_REPORT_S."""
    monkeypatch.setenv("FAKE_LLAMA_SLOW_S", "2")
    monkeypatch.setattr(llama_server, "WAIT_REPORT_S", 0.5)
    with caplog.at_level("WARNING", logger=llama_server.__name__):
        server = LlamaServer(fake_llama_server, fake_server_options, health_timeout_s=60).start()
    server.close()
    waits = [r.getMessage() for r in caplog.records if "waiting for llama-server" in r.getMessage()]
    assert waits and "waiting for llama-server to load m.gguf" in waits[0] and "s so far" in waits[0]


def test_a_port_taken_by_another_program_is_named_and_another_port_is_tried(fake_llama_server, fake_server_options,
                                                                           monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    real, tries = llama_server._free_port, []

    def racy():  # another program takes the free port between our look and llama-server's bind
        tries.append(1)
        return port if len(tries) == 1 else real()

    monkeypatch.setattr(llama_server, "_free_port", racy)
    server = LlamaServer(fake_llama_server, fake_server_options, health_timeout_s=60).start()
    try:
        assert len(tries) == 2 and server.url != f"http://127.0.0.1:{port}"
    finally:
        server.close()
    monkeypatch.setattr(llama_server, "_free_port", lambda: port)
    with pytest.raises(ModelError) as refused:
        LlamaServer(fake_llama_server, fake_server_options, health_timeout_s=60).start()
    taken.close()
    message = str(refused.value)
    assert f"could not listen on 127.0.0.1:{port}" in message and "Check the model files" not in message
