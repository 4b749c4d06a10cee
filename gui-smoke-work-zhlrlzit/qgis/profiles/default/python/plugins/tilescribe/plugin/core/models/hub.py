"""Talking to the model hub through huggingface_hub, so HF_ENDPOINT, HF_HOME, HF_TOKEN and
proxies work as users expect; every hub failure becomes one message saying what to do."""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers

from ..errors import ModelError


@dataclass(frozen=True)
class RemoteFile:
    """A file as the hub describes it: where to fetch it, its hash (ETag), size and commit."""

    file: str
    url: str
    etag: str
    size: Optional[int]
    commit: str


def endpoint() -> str:
    """HF_ENDPOINT read now (huggingface_hub reads it once, at import), else the library's."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def check_online() -> None:
    if constants.is_offline_mode():
        raise ModelError(
            "Downloads are switched off: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set in the "
            "environment. Run the download without it, e.g. `env -u HF_HUB_OFFLINE tilescribe models "
            "download ...`.")


MAX_FILE_BYTES = 1 << 50  # 1 PiB: past any model file; a larger declared size is a wrong answer


def remote_file(repo: str, filename: str, revision: str) -> RemoteFile:
    """The hub's metadata of one file (a HEAD request); ModelError when the hub cannot give it."""
    base = endpoint()
    url = hf_hub_url(repo, filename, revision=revision, endpoint=base)
    with hub_errors(repo, filename, revision):
        meta = get_hf_file_metadata(url, endpoint=base)
    if not meta.commit_hash or not meta.etag:
        raise ModelError(
            f"{base} answered for {repo}/{filename} without the headers of a Hugging Face hub "
            "(X-Repo-Commit, ETag). Check HF_ENDPOINT and your proxy settings.")
    if meta.size is not None and not 0 <= meta.size <= MAX_FILE_BYTES:  # was exit 70 (OverflowError, ...)
        shown = str(meta.size) if len(str(meta.size)) <= 30 else f"a number of {len(str(meta.size))} digits"
        raise ModelError(
            f"{base} declares the size of {repo}/{filename} as {shown} bytes, which no model file has: the hub "
            "or a mirror between answers wrongly. Check HF_ENDPOINT and your proxy settings, then download again.")
    return RemoteFile(filename, meta.location, meta.etag, meta.size, meta.commit_hash)


def download_headers(url: str) -> dict:
    """The hub's headers (user agent, token from HF_TOKEN or HF_HOME); the token never leaves the hub."""
    headers = build_hf_headers()
    if _origin(url) != _origin(endpoint()):
        headers.pop("authorization", None)  # a signed CDN address needs no token
    return headers


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


@contextlib.contextmanager
def hub_errors(repo: str, filename: str, revision: str, folder=None):
    """Translates huggingface_hub and network errors into ModelErrors naming what to do."""
    where = f"{endpoint()}/{repo}"
    try:
        yield
    except RemoteEntryNotFoundError as exc:
        raise ModelError(
            f"{repo} has no file '{filename}' (revision {revision}): it may have been renamed or "
            f"removed. See the repository's files at {where}/tree/{revision} and give the current "
            "names with --files MODEL.gguf MMPROJ.gguf.") from exc
    except RevisionNotFoundError as exc:
        raise ModelError(f"{repo} has no revision '{revision}'. Give a branch, tag or commit that "
                         f"exists (see {where}).") from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ModelError(
            f"The repository {repo} was not found at {endpoint()}, or it is private or gated. Check "
            "its name; for a gated or private model accept its terms on the hub and log in "
            "(`hf auth login`, or set HF_TOKEN).") from exc
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        check_online()
        raise _unreachable(exc) from exc
    except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.ProxyError,
            httpx2.RemoteProtocolError) as exc:
        raise _unreachable(exc) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ModelError(f"The hub at {endpoint()} answered HTTP {status} for {repo}/{filename}. "
                         "Try again later; what was downloaded is kept and resumed.") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ModelError(
                f"The disk filled up while downloading {filename} into {folder}: {exc.strerror}. "
                "Free some space or choose another models folder (--dir, or Models folder in the "
                "QGIS settings), then download again: it resumes where it stopped.") from exc
        raise


def _unreachable(exc: Exception) -> ModelError:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return ModelError(
        f"Cannot reach the model hub at {endpoint()} ({reason}). Check the internet connection, the "
        "proxy settings (HTTPS_PROXY) and HF_ENDPOINT; what was downloaded is kept, and the next "
        "download resumes it.")
