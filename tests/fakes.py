"""Fast deterministic test doubles (the real backends have their own tests)."""

from __future__ import annotations

import hashlib
import io
import threading

from tilescribe.plugin.core.captioning.base import CaptionResult
from tilescribe.plugin.core.captions import CaptionVariant
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
