"""Captioning through an OpenAI-compatible chat server (llama.cpp, vLLM, Ollama, OpenAI)."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Mapping

from ..errors import CaptionError, ModelError
from .base import DEFAULT_MAX_ATTEMPTS, CaptionResult, caption_with_retries
from .prompt import PROMPT_VERSION, build_prompt, field_max_len, response_schema

BACKEND = "openai-http"
SERVER_COMMAND = (
    "python -m llama_cpp.server --model MODEL.gguf --clip_model_path MMPROJ.gguf "
    "--chat_format llava-1-5 --n_ctx 4096 --host 127.0.0.1 --port 8000"
)
# Tried in this order; a server that rejects one gets the next, and the captioner
# remembers what worked. OpenAI, vLLM, Ollama and llama.cpp's C++ server take
# json_schema; llama_cpp.server (Python) takes only json_object with a schema and
# answers a json_schema request with HTTP 500 that names response_format.
FORMATS = ("json_schema", "json_object", "none")
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_FORMAT_REJECTED_STATUS = frozenset({400, 422, 500})
_FORMAT_WORDS = re.compile(rb"response_format|json_schema|json_object|response format", re.I)
_SECRET_PARAM = re.compile(r"key|token|secret|passw|auth|sig|cred|session", re.I)
_MAX_DELAY_S = 60.0  # a Retry-After of an hour must not freeze indexing silently
_EXCERPT = 200
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
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


def chat_endpoint(base_url: str) -> str:
    """{base}/v1/chat/completions from a server root, a .../v1 URL or the endpoint itself.

    Credentials in the URL are dropped here: urllib cannot send them, they go in a header.
    """
    parts = urllib.parse.urlsplit(str(base_url).strip())
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if parts.scheme not in ("http", "https") or not host:
        raise ModelError(
            f"The captioning server URL {redact_url(base_url)!r} is not an http(s) URL. "
            "Give one like http://127.0.0.1:8000/v1 in the server URL setting."
        )
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        path = path[: -len(suffix)] if path.endswith(suffix) else path
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, path + "/v1/chat/completions", parts.query, "")
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Surfaces a redirect as an error: following it would re-send the API key to
    another address and turn the POST into a GET."""

    def redirect_request(self, *args, **kwargs):
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAICompatibleCaptioner:
    """Captions tiles with a vision model behind POST {base_url}/v1/chat/completions.

    Thread-safe: the indexer runs `parallel_requests` caption() calls at once.
    The API key comes only from the environment variable named by `api_key_env`;
    without one, user:password in the URL is sent as HTTP Basic auth.
    `json_schema=False` sends no response_format (for servers that fail on it).
    """

    backend = BACKEND

    def __init__(
        self, base_url: str, model: str, *, api_key_env: str | None = None,
        parallel_requests: int = 4, timeout_s: float = 120, max_retries: int = 4,
        backoff_s: float = 1.0, json_schema: bool = True, temperature: float = 0.3,
        max_tokens: int | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS, seed: int = 0,
        max_len: int | Mapping[str, int] | None = None,
    ):
        self.endpoint = chat_endpoint(base_url)
        self.url = redact_url(base_url)
        if not isinstance(model, str) or not model.strip():
            raise ModelError(
                f"Give the name of the model the server at {self.url} serves "
                "(GET /v1/models lists them)."
            )
        _check_settings(parallel_requests, timeout_s, max_retries, backoff_s, max_attempts)
        self.model, self.api_key_env = model.strip(), api_key_env
        self.parallel_requests, self.timeout_s = int(parallel_requests), float(timeout_s)
        self.max_retries, self.backoff_s = int(max_retries), float(backoff_s)
        self.json_schema = json_schema
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_attempts, self.seed, self.max_len = max_attempts, seed, field_max_len(max_len)
        self._secret = ""
        self._headers = self._auth_headers(base_url)
        host = urllib.parse.urlsplit(self.endpoint).hostname or ""
        # A proxy from the environment must not capture traffic to a server on this machine.
        proxies = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        self._opener = urllib.request.build_opener(_NoRedirect, *proxies)
        self._format_lock = threading.Lock()
        self._format = 0 if json_schema else FORMATS.index("none")
        self._reached = False  # once the server has answered, a refused connection is a restart
        self._closed = False

    def _auth_headers(self, base_url: str) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "").strip()
            if not key:
                raise ModelError(
                    f"The environment variable {self.api_key_env} (the API key setting of the "
                    f"server {self.url}) is not set. Set it to the server's API key first."
                )
            self._secret = key
            headers["Authorization"] = f"Bearer {key}"
            return headers
        parts = urllib.parse.urlsplit(str(base_url).strip())
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._secret = password
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return headers

    def describe(self) -> dict:
        """Backend, redacted URL, model and settings; never the key or URL credentials."""
        return {
            "backend": self.backend,
            "url": self.url,
            "endpoint": redact_url(self.endpoint),
            "model": self.model,
            "prompt_version": PROMPT_VERSION,
            "api_key_env": self.api_key_env,  # the variable's name, not its value
            "response_format": FORMATS[self._format],
            "settings": {
                "parallel_requests": self.parallel_requests, "timeout_s": self.timeout_s,
                "max_retries": self.max_retries, "backoff_s": self.backoff_s,
                "json_schema": self.json_schema, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "max_attempts": self.max_attempts,
                "seed": self.seed, "max_len": dict(self.max_len),
            },
        }

    def caption(self, png: bytes, n_variants: int) -> CaptionResult:
        """`n_variants` valid variants for a PNG tile; CaptionError after max_attempts answers."""
        if self._closed:
            raise ModelError(f"The captioner for {self.url} was closed; open a new one.")
        if not png.startswith(_PNG_MAGIC):
            raise CaptionError("the tile image given to the captioner is not a PNG")
        return caption_with_retries(
            self._generate, png, n_variants, max_attempts=self.max_attempts,
            label=f"The model {self.model} at {self.url}",
        )

    def close(self) -> None:
        """Refuses further captions; there is no connection to free (one per request)."""
        self._closed = True

    def __enter__(self) -> "OpenAICompatibleCaptioner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _generate(self, png: bytes, n_variants: int, attempt: int) -> tuple[str, int]:
        """One answer, stepping down to a plainer response_format when the server rejects one."""
        for _ in FORMATS:  # the format only moves forward: at most one pass per format
            tried = self._format
            status, body = self._send(self._payload(png, n_variants, attempt, FORMATS[tried]))
            if 200 <= status < 300:
                return self._answer(body)
            if tried + 1 < len(FORMATS) and _rejects_format(status, body):
                self._fall_back(tried, status, body)
                continue
            raise self._status_error(status, body)
        raise AssertionError("unreachable: the last format is never rejected as a format")

    def _fall_back(self, tried: int, status: int, body: bytes) -> None:
        with self._format_lock:
            if self._format == tried:  # another thread may have stepped down already
                self._format = tried + 1
                log.warning(
                    "The server at %s rejected response_format %s (HTTP %s: %s); using %s.",
                    self.url, FORMATS[tried], status, self._excerpt(body), FORMATS[tried + 1],
                )

    def _payload(self, png: bytes, n_variants: int, attempt: int, fmt: str) -> dict:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": uri}},
                {"type": "text", "text": build_prompt(n_variants)},
            ]}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens or self._worst_case_tokens(n_variants),
            # A new seed per attempt: the same seed would repeat a rejected answer.
            "seed": (self.seed + attempt) & 0x7FFFFFFF,
        }
        schema = response_schema(n_variants, self.max_len)
        if fmt == "json_schema":
            payload["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "captions", "schema": schema, "strict": True}}
        elif fmt == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": schema}
        return payload

    def _worst_case_tokens(self, n_variants: int) -> int:
        """Every string at its maxLength at one token per character, plus JSON punctuation."""
        return n_variants * (sum(self.max_len.values()) + 40) + 20

    def _send(self, payload: dict) -> tuple[int, bytes]:
        """POST with back-off retries on timeouts, dropped connections, 429 and 5xx."""
        data = json.dumps(payload).encode("utf-8")
        sent_format = "response_format" in payload
        last, retry_after = "", None
        for retry in range(self.max_retries + 1):
            if retry:
                time.sleep(self._delay(retry, retry_after))
            retry_after = None
            try:
                status, body, headers = self._post(data)
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                last = self._transport_failure(exc)
                continue
            self._reached = True
            # A 500 about response_format is not transient: _generate steps down instead.
            if status in _RETRY_STATUS and not (sent_format and _rejects_format(status, body)):
                last = f"HTTP {status}: {self._excerpt(body)}"
                retry_after = headers.get("Retry-After")
                continue
            return status, body
        raise ModelError(
            f"The captioning server at {self.url} failed {self.max_retries + 1} times in a row "
            f"(last: {last}). Check the server's log; if it is overloaded, lower "
            "parallel_requests or raise timeout_s."
        )

    def _post(self, data: bytes) -> tuple[int, bytes, Mapping]:
        request = urllib.request.Request(
            self.endpoint, data=data, headers=self._headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read(), err.headers

    def _transport_failure(self, exc: Exception) -> str:
        """The reason to retry after a failed request; ModelError when retrying cannot help."""
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ConnectionRefusedError) and not self._reached:
            raise ModelError(
                f"Cannot connect to the captioning server at {self.url}: connection refused. "
                f"Is the server running? Start it with, for example: {SERVER_COMMAND} "
                "and check the URL and port in the settings."
            )
        if isinstance(reason, socket.gaierror):
            raise ModelError(
                f"Cannot find the captioning server {self.url}: {reason}. Check the host name."
            )
        if isinstance(reason, (ssl.SSLError, ssl.CertificateError)):
            raise ModelError(
                f"TLS with the captioning server {self.url} failed: {reason}. "
                "Check https and the server's certificate."
            )
        if isinstance(reason, str):  # urllib's own complaints about the URL
            raise ModelError(f"Cannot send a request to {self.url}: {reason}.")
        if isinstance(reason, TimeoutError):
            return f"no answer within timeout_s={self.timeout_s:g} s"
        return f"{type(reason).__name__}: {reason}"

    def _delay(self, retry: int, retry_after: str | None) -> float:
        # Jitter spreads the retries of parallel requests so they do not hit the server together.
        delay = self.backoff_s * 2 ** (retry - 1) * random.uniform(0.5, 1.5)
        try:
            delay = max(delay, float(retry_after)) if retry_after else delay
        except ValueError:
            pass  # an HTTP-date Retry-After: the back-off alone is good enough
        return min(delay, _MAX_DELAY_S)

    def _answer(self, body: bytes) -> tuple[str, int]:
        """(content, completion tokens) of a 2xx body; CaptionError for a broken answer."""
        text = body.decode("utf-8", "replace")
        if text.lstrip()[:1] == "<":
            raise ModelError(
                f"The server at {self.url} answered with a web page, not an API answer "
                f"({self._excerpt(body)}). Check the URL: it should be an OpenAI-compatible "
                "API such as http://127.0.0.1:8000/v1."
            )
        try:
            data = json.loads(text, strict=False)
            message = data["choices"][0]["message"]
            content = message.get("content") or ""
        except json.JSONDecodeError:
            raise CaptionError(f"the server's answer is not JSON: {self._excerpt(body)}") from None
        except (KeyError, IndexError, TypeError, AttributeError):
            raise CaptionError(
                f"the server's answer has no choices[0].message: {self._excerpt(body)}"
            ) from None
        if isinstance(content, list):  # some servers answer in content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return str(content), int(usage.get("completion_tokens") or 0)

    def _status_error(self, status: int, body: bytes) -> ModelError:
        excerpt = self._excerpt(body)
        if status in (401, 403):
            fix = (f"Check the key in the environment variable {self.api_key_env}"
                   if self.api_key_env else "Put the server's API key in an environment variable "
                   "and name that variable in the API key setting (api_key_env)")
            return ModelError(
                f"The captioning server at {self.url} refused the request "
                f"(HTTP {status}: {excerpt}). {fix}."
            )
        if status == 404:
            return ModelError(
                f"The captioning server at {self.url} answered 404 ({excerpt}): the model "
                f"{self.model!r} is not served there, or the URL is not the API root. Check the "
                "model name (GET /v1/models lists them) and that the URL is the server root "
                "or ends in /v1."
            )
        if 300 <= status < 400:
            return ModelError(
                f"The captioning server at {self.url} redirects (HTTP {status}). "
                "Give the URL it redirects to (https?) in the settings."
            )
        return ModelError(
            f"The captioning server at {self.url} rejected the request (HTTP {status}: {excerpt}). "
            "If it is about the context length, lower max_tokens or the number of variants, or "
            "raise the server's context size; if about images, serve a vision model."
        )

    def _excerpt(self, body: bytes) -> str:
        """The server's error message, or the start of its body, with our own secret removed."""
        text = body.decode("utf-8", "replace")
        try:
            error = json.loads(text, strict=False).get("error")
            text = str(error.get("message", error)) if isinstance(error, dict) else str(error or text)
        except (ValueError, AttributeError):
            pass
        text = " ".join(text.split())
        if len(self._secret) >= 6:  # a shorter one would blank out ordinary words
            text = text.replace(self._secret, "***")  # a server may echo the key it refused
        return repr(text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""))


def _rejects_format(status: int, body: bytes) -> bool:
    """Whether an error answer is about response_format, which a plainer format may avoid."""
    return status in _FORMAT_REJECTED_STATUS and bool(_FORMAT_WORDS.search(body[:4000]))


def _check_settings(parallel_requests, timeout_s, max_retries, backoff_s, max_attempts) -> None:
    for name, value, low in (
        ("parallel_requests", parallel_requests, 1), ("timeout_s", timeout_s, 1e-3),
        ("max_retries", max_retries, 0), ("backoff_s", backoff_s, 0),
        ("max_attempts", max_attempts, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise ModelError(
                f"The captioning setting {name} must be a number of at least {low}, not {value!r}."
            )
