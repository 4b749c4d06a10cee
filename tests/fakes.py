"""Fast deterministic test doubles (the real backends have their own tests)."""

from __future__ import annotations

import hashlib
import io
import threading
import zlib
from typing import Sequence

import numpy as np

from tilescribe.plugin.core.captioning.base import CaptionResult
from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.embedding import normalise_rows
from tilescribe.plugin.core.errors import CaptionError


class FakeCaptioner:
    """Describes a tile by its mean brightness; can fail on chosen calls."""

    backend = "fake"

    def __init__(self, fail_calls=(), parallel_requests=1, on_call=None):
        self.calls = 0
        self.fail_calls = set(fail_calls)
        self.parallel_requests = parallel_requests
        self.on_call = on_call
        self.closed = False
        self.images: list[bytes] = []
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return {"backend": self.backend, "model": {"name": "fake"}}

    def caption(self, png: bytes, n_variants: int) -> CaptionResult:
        from PIL import Image

        with self._lock:
            self.calls += 1
            call = self.calls
            self.images.append(png)
        if self.on_call:
            self.on_call(call)
        if call in self.fail_calls:
            raise CaptionError(f"fake failure on call {call}")
        image = Image.open(io.BytesIO(png)).convert("L")
        brightness = "bright" if sum(image.getdata()) / (image.width * image.height) > 100 else "dark"
        tag = hashlib.sha1(png).hexdigest()[:6]
        variants = [CaptionVariant(f"A {brightness} tile {tag}.", f"feature {i}", f"caption {i} {tag}")
                    for i in range(n_variants)]
        return CaptionResult(variants, "{}", 1, 10, 0.001)

    def close(self) -> None:
        self.closed = True


class HashingEmbedder:
    """Deterministic bag-of-words embedder for fast unit tests (not for real search).

    Words hash into buckets, so texts sharing words are close: enough to test
    ranking logic without loading a model.
    """

    def __init__(self, dim: int = 64, name: str = "hashing-test"):
        self.dim = dim
        self.name = name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.strip(".,;:").encode()) % self.dim] += 1.0
        return normalise_rows(out)
