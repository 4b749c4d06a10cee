"""The hub's file hashes: an LFS file's ETag is its sha256, a small file's is its git blob sha1."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable, Optional

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 1 << 20


def hash_kind(etag: str) -> Optional[str]:
    """'sha256', 'git-sha1', or None when the ETag is no content hash (then only the size is checked)."""
    etag = (etag or "").strip('"').lower()
    if _SHA256.match(etag):
        return "sha256"
    if _SHA1.match(etag):
        return "git-sha1"
    return None


def file_digest(path: Path, kind: str, on_bytes: Optional[Callable[[int], None]] = None) -> str:
    """The hex digest of a file as the hub computes it for that kind of ETag."""
    path = Path(path)
    if kind == "sha256":
        digest = hashlib.sha256()
    elif kind == "git-sha1":
        digest = hashlib.sha1()  # git's object id: sha1 over "blob <size>\0" + content
        digest.update(f"blob {path.stat().st_size}\0".encode())
    else:
        raise ValueError(f"unknown hash kind {kind!r}")
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def matches_etag(path: Path, etag: str, on_bytes: Optional[Callable[[int], None]] = None) -> Optional[bool]:
    """Whether the file's content has the hub's hash; None when the ETag is not a content hash."""
    kind = hash_kind(etag)
    if kind is None:
        return None
    return file_digest(path, kind, on_bytes) == etag.strip('"').lower()
