"""Fixtures: the fake hub on 127.0.0.1 serving the tiny GGUF pair, and huggingface_hub pointed at it."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from fake_hub import FakeHub

TINY_REPO = "tiny/tiny-llava-GGUF"


@pytest.fixture
def hub(tiny_pair, monkeypatch):
    """A running fake hub holding the tiny pair; HF_ENDPOINT points at it, downloads allowed."""
    fake = hub_serving(tiny_pair)
    online(monkeypatch, fake.endpoint)
    yield fake
    fake.stop()


def online(monkeypatch, endpoint: str) -> None:
    """huggingface_hub online and aimed at `endpoint` for this test only (conftest sets it offline)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # read once at import: patch the value


@pytest.fixture
def small_chunks(monkeypatch):
    """huggingface_hub writes in 4 KiB chunks instead of 10 MiB, so tiny files download in many writes."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 4096)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs); skipped where mounting is not allowed (not root)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield Path(mount)
    subprocess.run(["umount", "-l", str(mount)], check=False)


def hub_serving(tiny_pair) -> FakeHub:
    """A started fake hub whose TINY_REPO holds the tiny pair."""
    fake = FakeHub()
    for path in tiny_pair:
        fake.add(TINY_REPO, path.name, path.read_bytes())
    fake.start()
    return fake
