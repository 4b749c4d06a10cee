"""Issue 22: the managed llama-server's API key never appears on its command line."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from tilescribe.plugin.core.captioning.llama_server import LlamaServer

def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_the_key_is_read_from_a_private_file_never_from_the_command_line(fake_llama_server, fake_server_options,
                                                                         tmp_path, monkeypatch):
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_LLAMA_RECORD", str(record))
    server = LlamaServer(fake_llama_server, fake_server_options, health_timeout_s=60).start()
    try:
        key = server.api_key
        assert key and key not in " ".join(server.command(1234))
        assert key not in _cmdline(server.process.pid)
        for child in Path(f"/proc/{server.process.pid}/task").iterdir():
            assert key not in Path(f"/proc/{server.process.pid}/task/{child.name}/environ").read_bytes().decode(
                "utf-8", "replace")
        given = json.loads(record.read_text())
        assert "--api-key" not in given["argv"] and "--api-key-file" in given["argv"]
        assert given["key_file_mode"] == 0o600 and given["key_dir_mode"] == 0o700
        key_file = Path(given["argv"][given["argv"].index("--api-key-file") + 1])
        assert not key_file.exists()  # read by the server at start; gone once it answers
        request = urllib.request.Request(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        assert json.loads(opener.open(request, timeout=10).read())["data"]
    finally:
        server.close()
    assert not key_file.parent.exists()
