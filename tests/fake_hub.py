"""A local stand-in for the Hugging Face hub on 127.0.0.1, speaking what huggingface_hub reads.

Two servers, as on the real hub: the hub answers HEAD/GET /{repo}/resolve/{revision}/{file}
with a 302 to a "CDN" on another port plus X-Repo-Commit, ETag / X-Linked-Etag (the sha256
of an LFS file), X-Linked-Size; a missing repo or file gets a 404 with X-Error-Code. The CDN
serves the bytes with Content-Length, Accept-Ranges and Range (206 + Content-Range).
Faults for tests: `corrupt` (serve altered bytes), `cut_after` (drop the connection after
N bytes, once), `stall_after` (stop sending after N bytes until `release` is set).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "c0ffee" + "0" * 34
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class FakeHub:
    repos: dict = field(default_factory=dict)        # repo -> {file name: bytes}
    corrupt: set = field(default_factory=set)        # file names served with altered bytes
    cut_after: dict = field(default_factory=dict)    # file name -> bytes sent before a drop (once)
    stall_after: dict = field(default_factory=dict)  # file name -> bytes sent before stalling
    claimed_size: dict = field(default_factory=dict)  # file name -> X-Linked-Size to announce
    plain_etag: set = field(default_factory=set)     # file names whose ETag is no content hash (a mirror)
    rate: int = 0                                    # CDN bytes per second (0: as fast as it goes): for soaks
    release: threading.Event = field(default_factory=threading.Event)
    log: list = field(default_factory=list)          # (server, method, path, Range header)
    auth: list = field(default_factory=list)         # (server, Authorization header or None)

    def add(self, repo: str, name: str, data: bytes) -> str:
        self.repos.setdefault(repo, {})[name] = data
        return hashlib.sha256(data).hexdigest()

    def blob(self, sha: str):
        for files in self.repos.values():
            for name, data in files.items():
                if hashlib.sha256(data).hexdigest() == sha:
                    return name, data
        return None, None

    def start(self) -> "FakeHub":
        self._hub = _serve(self, _HubHandler)
        self._cdn = _serve(self, _CdnHandler)
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def ranges(self, name: str) -> list:
        """The Range headers of the CDN GETs of one file, in order (None: a whole-file GET)."""
        sha = hashlib.sha256(self.repos_file(name)).hexdigest()
        return [r for server, method, path, r in self.log if server == "cdn" and method == "GET"
                and path.endswith(sha)]

    def repos_file(self, name: str) -> bytes:
        return next(files[name] for files in self.repos.values() if name in files)

    def stop(self) -> None:
        self.release.set()
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()


def _serve(hub: FakeHub, handler) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.hub = hub
    # A short poll: shutdown() waits one poll, and every test stops two servers.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "?"

    def log_message(self, *args):  # quiet: the test output stays readable
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def do_HEAD(self):
        self.hub.log.append((self.name, "HEAD", self.path, self.headers.get("Range")))
        self.hub.auth.append((self.name, self.headers.get("Authorization")))
        self.answer(head=True)

    def do_GET(self):
        self.hub.log.append((self.name, "GET", self.path, self.headers.get("Range")))
        self.hub.auth.append((self.name, self.headers.get("Authorization")))
        self.answer(head=False)

    def reply(self, status: int, headers: dict, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class _HubHandler(_Handler):
    name = "hub"

    def answer(self, head: bool) -> None:
        match = _RESOLVE.match(self.path.split("?")[0])
        files = self.hub.repos.get(match["repo"]) if match else None
        if files is None:
            self.reply(404, {"X-Error-Code": "RepoNotFound"}, b"Repository not found")
            return
        if match["rev"] not in ("main", COMMIT):
            self.reply(404, {"X-Error-Code": "RevisionNotFound"}, b"Revision not found")
            return
        data = files.get(match["file"])
        if data is None:
            self.reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, b"Entry not found")
            return
        sha = hashlib.sha256(data).hexdigest()
        etag = f'W/"{len(data):x}-5f3a"' if match["file"] in self.hub.plain_etag else f'"{sha}"'
        self.reply(302, {"Location": f"{self.hub.cdn}/blobs/{sha}", "X-Repo-Commit": COMMIT,
                         "ETag": etag, "X-Linked-Etag": etag,
                         "X-Linked-Size": str(self.hub.claimed_size.get(match["file"], len(data)))})


class _CdnHandler(_Handler):
    name = "cdn"

    def answer(self, head: bool) -> None:
        name, data = self.hub.blob(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.reply(404, {}, b"no such blob")
            return
        if name in self.hub.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = 0
        match = _RANGE.match(self.headers.get("Range") or "")
        if match:
            start = int(match[1])
        status = 206 if match else 200
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not head:
            self.send_body(name, data[start:])

    def send_body(self, name: str, body: bytes) -> None:
        cut = self.hub.cut_after.pop(name, None)
        stall = self.hub.stall_after.get(name)
        limit = cut if cut is not None else stall
        if self.hub.rate and limit is None:  # a slow link, so a soak can kill a download mid-file
            step = max(1, self.hub.rate // 20)
            try:
                for offset in range(0, len(body), step):
                    self.wfile.write(body[offset:offset + step])
                    time.sleep(step / self.hub.rate)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client was killed mid-file: what a soak does on purpose
            return
        self.wfile.write(body[:limit] if limit is not None else body)
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(2)  # the network drops: the client sees a short body
        elif stall is not None:
            self.hub.release.wait(60)
            self.wfile.write(body[stall:])
