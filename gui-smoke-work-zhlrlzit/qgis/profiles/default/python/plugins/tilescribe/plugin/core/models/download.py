"""Download a model's files into the models folder: disk space checked first, resumable after
any interruption, each file's hash checked against the hub's before it takes its place (where
the hub or a mirror gives no content hash, only the size: a `checked` event says which, per file).

huggingface_hub's own hf_hub_download writes to a temporary file unique to each process and
deletes it on failure, so a cancelled or killed download would start again from zero; here
its metadata call and its resuming http_get write to a partial file kept per hub hash.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.file_download import http_get
from tqdm import tqdm

from ..errors import Cancelled, ModelError
from .catalogue import ModelSpec, format_size
from .folder import PARTIAL_DIR, InstalledModel, Manifest, read_manifest, repo_folder, write_manifest
from .hashing import hash_kind, matches_etag
from .hub import RemoteFile, check_online, download_headers, endpoint, hub_errors, remote_file
from .ownership import download_lock, open_partial, partial_dir, partial_size
from .pairing import assign_roles

Progress = Callable[[dict], None]
# Kept free beyond the files themselves: a full disk breaks more than this download.
DISK_MARGIN_BYTES = 64 * 1024 * 1024


def download_model(spec: ModelSpec, root: Path, *, progress: Optional[Progress] = None,
                   cancel: Optional[Callable[[], bool]] = None) -> InstalledModel:
    """Fetch (or resume) every file of `spec` into root/<owner>--<name>/ and record them."""
    check_online()
    report = progress or (lambda event: None)
    folder = repo_folder(root, spec.repo)
    remotes = _remote_files(spec)
    with download_lock(folder, spec.repo):  # one download per model folder
        return _download_locked(spec, folder, remotes, report, cancel)


def _download_locked(spec: ModelSpec, folder: Path, remotes: list[RemoteFile], report: Progress,
                     cancel: Optional[Callable[[], bool]]) -> InstalledModel:
    manifest = read_manifest(folder)
    todo = [r for r in remotes if not _already_there(folder, r, manifest, report)]
    check_disk_space(folder, todo)
    total = sum(r.size or 0 for r in todo)
    done = 0
    for remote in todo:
        fetch_file(remote, folder, spec.repo, spec.revision, done, total, report, cancel)
        done += remote.size or 0
    pair = assign_roles(spec, folder, remotes)
    updated = Manifest(spec.name, spec.repo, spec.revision, remotes[0].commit, pair.family,
                       manifest.files if manifest else [])
    updated.merge(pair.files)  # files of earlier downloads from this repository stay recorded
    write_manifest(folder, updated)
    model = InstalledModel(spec.name, spec.repo, folder, pair.model, pair.mmproj, pair.family)
    report({"event": "done", **model.to_json()})
    return model


def _remote_files(spec: ModelSpec) -> list[RemoteFile]:
    """Metadata of each file; the later files pinned to the commit of the first, so the pair matches."""
    first = remote_file(spec.repo, spec.files[0], spec.revision)
    return [first] + [remote_file(spec.repo, f, first.commit) for f in spec.files[1:]]


def _already_there(folder: Path, remote: RemoteFile, manifest: Optional[Manifest], report: Progress) -> bool:
    """A file present with the hub's hash (recorded, or checked now for a file put there by hand)."""
    path = folder / remote.file
    if not path.is_file() or (remote.size is not None and path.stat().st_size != remote.size):
        return False
    record = manifest.record(remote.file) if manifest else None
    by = checked_by(remote)
    if record is not None and record.etag == remote.etag:
        report({"event": "present", "file": remote.file, "size": remote.size, "by": by})
        return True
    report({"event": "verify", "file": remote.file, "size": remote.size})
    if matches_etag(path, remote.etag) is False:
        return False
    report({"event": "present", "file": remote.file, "size": remote.size, "by": by})
    return True


def checked_by(remote: RemoteFile) -> str:
    """What a file is checked by: its content hash when the ETag is one, else its size only."""
    return hash_kind(remote.etag) or "size"


def _report_checked(remote: RemoteFile, report: Progress) -> None:
    report({"event": "checked", "file": remote.file, "size": remote.size, "by": checked_by(remote),
            "etag": remote.etag, "endpoint": endpoint()})


def check_disk_space(folder: Path, remotes: list[RemoteFile]) -> None:
    """ModelError before any byte is fetched when the files (less what is resumed) cannot fit."""
    needed = sum(max((r.size or 0) - partial_size(_partial_path(folder, r)), 0) for r in remotes)
    if not needed:
        return
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if needed + DISK_MARGIN_BYTES > free:
        raise ModelError(
            f"Not enough free disk space for the model in {folder}: it needs {format_size(needed)} "
            f"more, and {existing} has {format_size(free)} free. Free some space, or choose another "
            "models folder (--dir, or Models folder in the QGIS settings).")


def _partial_path(folder: Path, remote: RemoteFile) -> Path:
    key = remote.etag.strip('"')[:16]
    return folder / PARTIAL_DIR / f"{remote.file.replace('/', '--')}.{key}.part"


def fetch_file(remote: RemoteFile, folder: Path, repo: str, revision: str, before: int, total: int,
               report: Progress, cancel: Optional[Callable[[], bool]]) -> Path:
    """One file: taken from the Hugging Face cache or fetched (resuming its partial file), then
    hash-checked and moved into place."""
    part = _partial_path(folder, remote)
    partial_dir(folder, PARTIAL_DIR)
    for stale in part.parent.glob(f"{remote.file.replace('/', '--')}.*.part"):
        if stale != part:
            stale.unlink()  # the file changed on the hub since: its old bytes are useless
    if not _from_hf_cache(remote, repo, part, report):
        # Fresh metadata: the CDN address of a large file is signed for a limited time.
        remote = remote_file(repo, remote.file, remote.commit)
        _transfer(remote, part, folder, repo, revision, before, total, report, cancel)
        _check_hash(part, remote, report)
    _report_checked(remote, report)
    target = folder / remote.file
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return target


def _from_hf_cache(remote: RemoteFile, repo: str, part: Path, report: Progress) -> bool:
    """A copy already in the Hugging Face cache (HF_HOME, HF_HUB_CACHE) of this commit: linked, not fetched."""
    cached = try_to_load_from_cache(repo, remote.file, revision=remote.commit)
    if not isinstance(cached, str) or (remote.size is not None and os.path.getsize(cached) != remote.size):
        return False
    part.unlink(missing_ok=True)
    try:
        os.link(os.path.realpath(cached), part)  # same disk: no second copy of gigabytes
    except OSError:
        shutil.copyfile(cached, part)
    report({"event": "verify", "file": remote.file, "size": remote.size})
    if matches_etag(part, remote.etag) is False:  # a damaged cache: download instead
        part.unlink()
        return False
    report({"event": "cached", "file": remote.file, "size": remote.size, "from": cached})
    return True


def _transfer(remote: RemoteFile, part: Path, folder: Path, repo: str, revision: str, before: int, total: int,
              report: Progress, cancel: Optional[Callable[[], bool]]) -> None:
    """http_get into the partial file, resuming from its size (a Range request)."""
    resume = partial_size(part)  # a link planted there is removed, never followed
    if remote.size is not None and resume > remote.size:
        part.unlink()
        resume = 0
    report({"event": "file", "file": remote.file, "size": remote.size, "resume_from": resume})
    counter = _ProgressFile(remote, resume, before, total, report, cancel)
    with hub_errors(repo, remote.file, revision, folder), open_partial(part) as handle:
        counter.handle = handle
        try:
            http_get(remote.url, counter, resume_size=resume, headers=download_headers(remote.url),
                     expected_size=remote.size, displayed_filename=remote.file, tqdm_class=_NoBar)
        except OSError as exc:
            if "Consistency check failed" not in str(exc):
                raise
            raise ModelError(f"The download of {remote.file} ended early ({exc}). Download again: "
                             "it resumes where it stopped.") from exc


def _check_hash(part: Path, remote: RemoteFile, report: Progress) -> None:
    report({"event": "verify", "file": remote.file, "size": remote.size})
    if remote.size is not None and partial_size(part) != remote.size:
        part.unlink(missing_ok=True)
        raise ModelError(
            f"The downloaded {remote.file} is not the hub's size ({format_size(remote.size)}): it has been "
            "deleted. Download again.")
    if matches_etag(part, remote.etag) is False:
        part.unlink()
        raise ModelError(
            f"The downloaded {remote.file} does not match the hub's checksum ({remote.etag[:16]}…): it "
            "was damaged on the way and has been deleted. Download again; if it fails again, a proxy "
            "or the mirror at HF_ENDPOINT is altering the file.")


class _ProgressFile:
    """The partial file as http_get sees it: counts bytes, reports progress, honours cancel."""

    REPORT_EVERY_S = 0.25

    def __init__(self, remote, resume, before, total, report, cancel):
        self.handle = None
        self.remote, self.done, self.before, self.total = remote, resume, before, total
        self.report, self.cancel = report, cancel
        self._started, self._resumed_at, self._last = time.monotonic(), resume, 0.0

    def write(self, chunk: bytes) -> int:
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"download of {self.remote.file} stopped at {format_size(self.done)}; "
                            "download again to resume it.")
        written = self.handle.write(chunk)
        self.done += len(chunk)
        now = time.monotonic()
        if now - self._last >= self.REPORT_EVERY_S or self.done == self.remote.size:
            self._last = now
            rate = (self.done - self._resumed_at) / max(now - self._started, 1e-6)
            self.report({"event": "progress", "file": self.remote.file, "done": self.done,
                         "size": self.remote.size, "all_done": self.before + self.done,
                         "all_total": self.total, "bytes_per_s": round(rate)})
        return written

    def tell(self) -> int:
        return self.handle.tell()

    def seek(self, *args) -> int:
        return self.handle.seek(*args)

    def truncate(self, *args) -> int:
        size = self.handle.truncate(*args)
        self.done = self._resumed_at = size  # the server ignored the Range: it starts again
        return size


class _NoBar(tqdm):
    """huggingface_hub's bar off: progress goes to the caller's callback."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)
        super().__init__(*args, **{**kwargs, "disable": True})
