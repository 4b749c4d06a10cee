"""The Captioner protocol, its result, the shared retry loop and model file fingerprints."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..captions import CaptionVariant
from ..errors import CaptionError
from .parse import parse_variants

DEFAULT_MAX_ATTEMPTS = 3
_FINGERPRINT_SPAN = 1 << 20  # bytes hashed at each end of a model file

# generate(png, n_variants, attempt) -> (raw answer, completion tokens).
Generate = Callable[[bytes, int, int], "tuple[str, int]"]


@dataclass(frozen=True)
class CaptionResult:
    """Validated variants for one image, with what it took to get them."""

    variants: list[CaptionVariant]
    raw: str  # the answer that parsed, kept for the index and for debugging
    attempts: int
    completion_tokens: int  # summed over all attempts: it is what the time was spent on
    seconds: float
    failures: list[str] = field(default_factory=list)  # reasons of the rejected attempts


class Captioner(Protocol):
    """Writes caption variants for a rendered tile (PNG bytes)."""

    def describe(self) -> dict:
        """A JSON-able record of the run: backend, model fingerprints, settings; no secrets."""
        ...

    def caption(self, png: bytes, n_variants: int) -> CaptionResult:
        """`n_variants` valid variants; raises CaptionError after bounded retries."""
        ...

    def close(self) -> None:
        """Frees the model; safe to call more than once."""
        ...


def caption_with_retries(
    generate: Generate,
    png: bytes,
    n_variants: int,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    label: str = "the captioning model",
) -> CaptionResult:
    """Calls `generate` until its answer parses into `n_variants` valid variants.

    `generate(png, n_variants, attempt)` gets the 0-based attempt number so a
    backend can change its sampling seed: retrying with the same seed would
    repeat the same rejected answer. It raises CaptionError for a failure worth
    retrying; any other error (ModelError: a bad file or setting) stops at once.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    started = time.perf_counter()
    failures: list[str] = []
    tokens = 0
    for attempt in range(max_attempts):
        try:
            raw, used = generate(png, n_variants, attempt)
            tokens += used
            variants = parse_variants(raw, n_variants)
        except CaptionError as err:
            failures.append(str(err))
            continue
        return CaptionResult(
            variants, raw, attempt + 1, tokens, time.perf_counter() - started, failures
        )
    raise CaptionError(
        f"{label} gave no valid captions in {max_attempts} attempts; last reason: "
        f"{failures[-1]}. Try a larger or instruction-tuned vision model, fewer "
        "variants, or a lower temperature."
    )


def file_fingerprint(path: str | os.PathLike) -> dict:
    """Name, size and sha256 of the first and last MiB: cheap, yet tells model files apart.

    Only the file name is kept, never the folder: a run record may be shared.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(_FINGERPRINT_SPAN))
        if size > _FINGERPRINT_SPAN:
            handle.seek(max(size - _FINGERPRINT_SPAN, _FINGERPRINT_SPAN))
            digest.update(handle.read())
    return {"name": path.name, "size": size, "sha256_ends": digest.hexdigest()}
