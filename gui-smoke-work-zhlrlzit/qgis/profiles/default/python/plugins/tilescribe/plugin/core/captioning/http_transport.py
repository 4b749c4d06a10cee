"""One HTTP request with a total deadline, a bounded body and an abort that works from any thread.

urllib's timeout applies to each read, so a server that trickles bytes or sends an endless
chunked body holds a request forever, and nothing can interrupt it. Here every wait is
bounded by a deadline checked between reads, the body is read in pieces up to a byte
limit, and `abort()` shuts the socket down: whatever the request is blocked on returns at once.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import select
import socket
import ssl
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import ModelError

_READ_CHUNK = 64 << 10
_POLL_S = 0.05  # how often a wait for the first byte asks whether to go on waiting
_CONNECT_SLICE_S = 0.5  # a connect attempt; repeated until the connect budget is spent
_ERROR_BODY_BYTES = 64 << 10  # an error answer is only ever shown as an excerpt

# still_waiting(now) -> None to keep waiting for the first byte, or the reason to give up.
WaitPolicy = Callable[[float], Optional[str]]


class TransportError(Exception):
    """The request got no complete answer. `kind`: refused, dns, tls, timeout, reset."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


class Aborted(Exception):
    """abort() was called while the request was under way."""


class TooLarge(Exception):
    """The answer is longer than the byte limit; reading it stopped there."""

    def __init__(self, limit: int, declared: Optional[int]):
        super().__init__(f"more than {limit:,} bytes" + (f" ({declared:,} declared)" if declared else ""))
        self.limit, self.declared = limit, declared


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    first_byte_s: float  # seconds from sending to the first byte of the answer


@dataclass(frozen=True)
class Target:
    """Where a chat endpoint is and how to reach it (proxy from the environment, except loopback)."""

    scheme: str
    host: str
    port: int
    path: str  # path and query of the endpoint
    proxy: Optional[tuple[str, int]] = None
    headers: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, endpoint: str, headers: dict) -> "Target":
        parts = urllib.parse.urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname or "", port, path, _proxy_for(parts.scheme, parts.hostname or ""),
                   headers)

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        host, port = self.proxy or (self.host, self.port)
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout)
            if self.proxy:
                conn.set_tunnel(self.host, self.port)
            return conn
        return http.client.HTTPConnection(host, port, timeout=timeout)

    @property
    def request_path(self) -> str:
        # A plain-http proxy is sent the whole URL; an https one tunnels (CONNECT).
        if self.proxy and self.scheme == "http":
            return f"http://{self.host}:{self.port}{self.path}"
        return self.path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proxy_for(scheme: str, host: str) -> Optional[tuple[str, int]]:
    """The environment's proxy for this host; never for this machine (a proxy must not capture it)."""
    if is_loopback(host):
        return None
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return (parts.hostname, parts.port or 80) if parts.hostname else None


class Exchange:
    """One POST on its own connection. Thread-safe abort(); everything else on one thread."""

    def __init__(self, target: Target):
        self.target = target
        self.aborted = False
        self._sock: Optional[socket.socket] = None

    def abort(self) -> None:
        """Unblocks the request wherever it waits; safe from another thread or a signal handler."""
        self.aborted = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected yet, or already closed

    def post(self, data: bytes, *, send_timeout: float, still_waiting: WaitPolicy,
             body_timeout: float, max_bytes: int) -> Answer:
        """Sends `data`; waits for the first byte while `still_waiting` allows; then reads the
        answer within `body_timeout` seconds and `max_bytes` bytes (TooLarge beyond)."""
        conn = self.target.connection(send_timeout)
        conn._create_connection = self._connect  # sliced, abortable connect; TLS wraps it after
        sent = time.monotonic()
        try:
            self._send(conn, data)
            self._wait_first_byte(conn.sock, still_waiting)
            first = time.monotonic()
            # Every read, headers included, ends by the deadline: a trickle cannot stretch it.
            response = http.client.HTTPResponse(_Bounded(conn.sock, first + body_timeout), method="POST")
            response.begin()
            ok = 200 <= response.status < 300
            body = _read_body(response, max_bytes if ok else _ERROR_BODY_BYTES, strict=ok)
            return Answer(response.status, response.headers, body, first - sent)
        except (OSError, http.client.HTTPException) as exc:
            if self.aborted:
                raise Aborted() from None
            raise _transport_error(exc) from None
        finally:
            self._sock = None
            conn.close()

    def _connect(self, address, timeout=None, source_address=None):
        deadline = time.monotonic() + (timeout or _CONNECT_SLICE_S)
        while True:
            if self.aborted:
                raise ConnectionAbortedError("aborted")
            slice_s = max(0.01, min(_CONNECT_SLICE_S, deadline - time.monotonic()))
            try:
                sock = socket.create_connection(address, slice_s, source_address)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                continue
            sock.settimeout(timeout)
            return sock

    def _send(self, conn: http.client.HTTPConnection, data: bytes) -> None:
        conn.connect()
        self._sock = conn.sock  # the TLS socket once wrapped: the one abort() must shut
        if self.aborted:  # abort() ran before there was a socket to shut
            raise ConnectionAbortedError("aborted")
        headers = {**self.target.headers, "Content-Length": str(len(data)), "Connection": "close"}
        conn.request("POST", self.target.request_path, body=data, headers=headers)

    def _wait_first_byte(self, sock, still_waiting: WaitPolicy) -> None:
        """Polls for the answer's first byte, asking the policy between polls: the server may
        be queueing our request behind others, which is not the same as being stuck."""
        while True:
            if self.aborted:
                raise ConnectionAbortedError("aborted")
            pending = getattr(sock, "pending", lambda: 0)()  # TLS may hold decrypted bytes
            if pending or select.select([sock], [], [], _POLL_S)[0]:
                return
            reason = still_waiting(time.monotonic())
            if reason:
                raise TimeoutError(reason)


class _Bounded:
    """The socket as http.client reads it, each read bounded by what is left of a deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def makefile(self, mode: str):
        return io.BufferedReader(_BoundedRaw(self.sock, self.deadline))


class _BoundedRaw(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer did not finish arriving in time")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


def _read_body(response: http.client.HTTPResponse, limit: int, strict: bool) -> bytes:
    """At most `limit` bytes; beyond it TooLarge (an answer) or the start (an error page)."""
    declared = response.getheader("Content-Length")
    declared = int(declared) if declared and declared.isdigit() else None
    if strict and declared is not None and declared > limit:
        raise TooLarge(limit, declared)
    body = bytearray()
    while len(body) <= limit:
        chunk = response.read1(min(_READ_CHUNK, limit + 1 - len(body)))
        if not chunk:
            if response.length or (strict and not body):
                # read1 takes a connection closed early for the end of the answer; and an empty
                # success is one dropped in its headers (http.client accepts cut headers).
                raise http.client.IncompleteRead(bytes(body[-100:]), response.length)
            return bytes(body)
        body += chunk
    if strict:
        raise TooLarge(limit, declared)
    return bytes(body[:limit])


def _transport_error(exc: Exception) -> TransportError:
    if isinstance(exc, ConnectionRefusedError):
        return TransportError("refused", "connection refused")
    if isinstance(exc, socket.gaierror):
        return TransportError("dns", f"cannot resolve the host name ({exc})")
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return TransportError("tls", f"TLS failed ({exc})")
    if isinstance(exc, TimeoutError):
        return TransportError("timeout", str(exc) or "timed out")
    return TransportError("reset", f"{type(exc).__name__}: {exc}")


_SECRET_PARAM = re.compile(r"key|token|secret|passw|auth|sig|cred|session", re.I)


def redact_one(url: str) -> str:
    """`url` without user:password@ and with secret-looking query values as ***: safe to show."""
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<unparseable URL>"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    if "@" in parts.netloc:
        netloc = "***@" + netloc  # say credentials were there, never what they were
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = urllib.parse.urlencode(
        [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def check_url(url: str, redacted: str) -> None:
    """ModelError unless `url` is an http(s) URL with a host."""
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
        scheme, host, _ = parts.scheme, parts.hostname, parts.port
    except ValueError:
        scheme = host = None
    if scheme not in ("http", "https") or not host:
        raise ModelError(
            f"The captioning server URL {redacted!r} is not an http(s) URL. "
            "Give one like http://127.0.0.1:8000/v1 in the server URL setting."
        )
