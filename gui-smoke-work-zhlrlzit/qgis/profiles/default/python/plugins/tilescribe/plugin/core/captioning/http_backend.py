"""Captioning through OpenAI-compatible chat servers (llama.cpp, vLLM, Ollama, OpenAI), one or many."""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import threading
import time
import urllib.parse
from typing import Mapping, Optional, Sequence

from ..errors import CaptionError, Cancelled, ModelError
from . import defaults
from .base import DEFAULT_MAX_ATTEMPTS, CaptionResult
from .http_answers import (RETRY_STATUS, AnswerReader, TileRefused, answer_limit_bytes, rejects_format,
                           service_seconds, worst_case_chars)
from .http_pool import Endpoint, EndpointPool, Ticket
from .http_transport import (Aborted, Answer, Exchange, Target, TooLarge, TransportError, check_url,
                             redact_one)
from .endpoint_models import served_models, wrong_model
from .parse import MAX_ANSWER_CHARS, parse_variants
from .prompt import PROMPT_VERSION, build_messages, field_max_len, response_schema

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
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REFUSALS_BEFORE_STOP = 8  # tiles refused in a row, none captioned yet: the setup is wrong
log = logging.getLogger(__name__)


def redact_url(url) -> str:
    """`url` without user:password@ and with secret-looking query values as ***: safe to show.
    A list of URLs gives them all, space-separated."""
    if isinstance(url, (list, tuple)):
        return " ".join(redact_url(u) for u in url)
    return redact_one(url)


def chat_endpoint(base_url: str) -> str:
    """{base}/v1/chat/completions from a server root, a .../v1 URL or the endpoint itself.

    Credentials in the URL are dropped here: they go in a header.
    """
    check_url(base_url, redact_url(base_url))
    parts = urllib.parse.urlsplit(str(base_url).strip())
    host, port = parts.hostname, parts.port
    path = parts.path.rstrip("/")
    for suffix in ("/chat/completions", "/v1"):
        path = path[: -len(suffix)] if path.endswith(suffix) else path
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, path + "/v1/chat/completions", parts.query, "")
    )


def server_urls(value) -> list[str]:
    """The URLs of a server setting: one URL, several separated by spaces, or a list."""
    items = value.split() if isinstance(value, str) else list(value or ())
    return [str(u).strip() for u in items if str(u).strip()]


class _InvalidAnswer(CaptionError):
    """A 2xx answer that is not a usable completion, from `endpoint`."""

    def __init__(self, message: str, endpoint: Endpoint):
        super().__init__(message)
        self.endpoint = endpoint


class OpenAICompatibleCaptioner:
    """Captions tiles with a vision model behind POST {url}/v1/chat/completions, spread over
    one or more servers (`base_url`: a URL or a list of URLs).

    Thread-safe: the indexer runs `parallel_requests` caption() calls at once, the total
    over all servers (`parallel_per_server` each). cancel() ends every request within a
    fraction of a second. The API key is `api_key` (given directly, never recorded) or read
    from the environment variable named by `api_key_env`; without one, user:password in
    a URL is sent as HTTP Basic auth. `json_schema=False` sends no response_format.
    `timeout_s`: how long a request may go without the server answering anything.
    """

    backend = BACKEND

    def __init__(
        self, base_url: str | Sequence[str], model: str, *, api_key_env: str | None = None,
        api_key: str | None = None, parallel_requests: int = defaults.PARALLEL_REQUESTS,
        timeout_s: float = defaults.TIMEOUT_S,
        max_retries: int = 4, backoff_s: float = 1.0, json_schema: bool = True,
        temperature: float = 0.3, max_tokens: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS, seed: int = 0,
        max_len: int | Mapping[str, int] | None = None, family: str | None = None,
    ):
        urls = server_urls(base_url)
        if not urls:
            raise ModelError("Give the URL of at least one captioning server (--server URL).")
        self.urls = [redact_url(u) for u in urls]
        self.url = " ".join(self.urls)
        if not isinstance(model, str) or not model.strip():
            raise ModelError(f"Give the name of the model the server at {self.url} serves "
                             "(GET /v1/models lists them).")
        _check_settings(parallel_requests, timeout_s, max_retries, backoff_s, max_attempts)
        self.model, self.api_key_env, self.family = model.strip(), api_key_env, family
        self.parallel_per_server = int(parallel_requests)
        self.parallel_requests = self.parallel_per_server * len(urls)  # total in flight
        self.timeout_s, self.max_retries, self.backoff_s = float(timeout_s), int(max_retries), float(backoff_s)
        self.json_schema, self.temperature, self.max_tokens = json_schema, temperature, max_tokens
        self.max_attempts, self.seed, self.max_len = max_attempts, seed, field_max_len(max_len)
        key = self._api_key(api_key)
        secrets: list[str] = [key] if key else []
        self.endpoints = [chat_endpoint(u) for u in urls]
        self._cancel = threading.Event()
        self._pool = EndpointPool(
            [Endpoint(i, redact_url(u), Target.of(e, _auth_headers(u, key, secrets)), self.parallel_per_server)
             for i, (u, e) in enumerate(zip(urls, self.endpoints))],
            timeout_s=self.timeout_s, max_retries=self.max_retries, backoff_s=self.backoff_s,
            cancel=self._cancel, start_hint=SERVER_COMMAND)
        self._reader = AnswerReader(self.model, api_key_env, tuple(secrets))
        self._live: dict[int, Exchange] = {}  # requests under way, for cancel()
        self._format_lock = threading.Lock()
        self._format = 0 if json_schema else FORMATS.index("none")
        self._closed = False
        self._captioned, self._refusals = False, 0
        self._models_checked, self._models_lock = False, threading.Lock()

    def _api_key(self, api_key: str | None) -> str:
        if api_key:
            return str(api_key).strip()
        if not self.api_key_env:
            return ""
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ModelError(
                f"The environment variable {self.api_key_env} (the API key setting of the "
                f"server {self.url}) is not set. Set it to the server's API key first.")
        return key

    def describe(self) -> dict:
        """Backend, redacted URLs, model and settings; never a key or URL credentials.
        Which servers answer and how many is operational (OPERATIONAL_SETTINGS)."""
        return {
            "backend": self.backend,
            "url": self.url,
            "endpoint": redact_url(self.endpoints),
            "model": self.model,
            "prompt_version": PROMPT_VERSION,
            "api_key_env": self.api_key_env,  # the variable's name, not its value
            "response_format": FORMATS[self._format],
            "settings": {
                "parallel_requests": self.parallel_per_server, "timeout_s": self.timeout_s,
                "max_retries": self.max_retries, "backoff_s": self.backoff_s,
                "json_schema": self.json_schema, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "max_attempts": self.max_attempts,
                "seed": self.seed, "max_len": dict(self.max_len),
            },
        }

    def stats(self) -> list[dict]:
        """Per server: requests sent, answered, failed, abandoned after a timeout, current limit."""
        return self._pool.stats()

    def caption(self, png: bytes, n_variants: int) -> CaptionResult:
        """`n_variants` valid variants for a PNG tile. CaptionError: this tile failed (after
        max_attempts answers, or at once when the server refused it); Cancelled after cancel();
        ModelError/EngineError: a setting is wrong or every server has left the run."""
        if self._closed:
            raise ModelError(f"The captioner for {self.url} was closed; open a new one.")
        if not png.startswith(_PNG_MAGIC):
            raise CaptionError("the tile image given to the captioner is not a PNG")
        started, tokens, failures = time.perf_counter(), 0, []
        max_chars = max(MAX_ANSWER_CHARS, 2 * worst_case_chars(n_variants, self.max_len))
        self._check_models_once()
        avoid: set[int] = set()  # endpoints whose answer for this tile failed validation: others first
        for attempt in range(self.max_attempts):
            endpoint = None
            try:
                raw, used, endpoint = self._generate(png, n_variants, attempt, avoid)
                tokens += used
                variants = parse_variants(raw, n_variants, max_chars)
            except TileRefused as err:
                self._note_refusal(err)
                raise  # the same request again would be refused again
            except CaptionError as err:
                endpoint = getattr(err, "endpoint", endpoint)
                if endpoint is not None:  # its answer came, and failed validation: that server is named
                    self._pool.invalid_answer(endpoint, str(err))
                    avoid.add(endpoint.index)
                    failures.append(f"{err} (from {endpoint.url})")
                else:
                    failures.append(str(err))
                continue
            self._pool.valid_answer(endpoint)
            self._captioned = True
            return CaptionResult(variants, raw, attempt + 1, tokens, time.perf_counter() - started, failures)
        raise CaptionError(
            f"The model {self.model} at {self.url} gave no valid captions in {self.max_attempts} "
            f"attempts; last reason: {failures[-1]}. Try a larger or instruction-tuned vision "
            "model, fewer variants, or a lower temperature.")

    def _check_models_once(self) -> None:
        """Before the first tile, with several endpoints: leave out those serving another model."""
        if self._models_checked or len(self._pool.endpoints) < 2:
            return
        with self._models_lock:
            if self._models_checked:
                return
            listed = {e.index: (e.url, served_models(e.target)) for e in self._pool.endpoints}
            for index, message in wrong_model(self.model, listed).items():
                self._pool.leave(self._pool.endpoints[index], message)
            self._models_checked = True

    def _note_refusal(self, err: TileRefused) -> None:
        """A server that refuses every tile from the start is set up wrong (a context too small
        for any tile, a proxy rejecting the requests): one message, not thousands of failed tiles."""
        with self._format_lock:
            if self._captioned:
                return
            self._refusals += 1
            if self._refusals < REFUSALS_BEFORE_STOP:
                return
        raise ModelError(
            f"The captioning server at {self.url} refused each of the first {REFUSALS_BEFORE_STOP} tiles "
            f"and captioned none; the last: {err}. Check the model name, the server's settings and its "
            "log. The tiles it refused are marked failed; the next run tries them again.") from err

    def cancel(self) -> None:
        """Ends every request under way and refuses new ones (they raise Cancelled).
        Takes no lock: safe from a signal handler."""
        self._cancel.set()
        for exchange in list(self._live.values()):
            exchange.abort()

    def close(self) -> None:
        """Refuses further captions and ends any request still under way; idempotent."""
        self._closed = True
        self.cancel()

    def __enter__(self) -> "OpenAICompatibleCaptioner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _generate(self, png: bytes, n_variants: int, attempt: int, avoid: set = frozenset()):
        """(answer text, tokens, endpoint that gave it), stepping down to a plainer response_format
        when the server rejects one."""
        for _ in FORMATS:  # the format only moves forward: at most one pass per format
            tried = self._format
            answer, endpoint = self._send(self._payload(png, n_variants, attempt, FORMATS[tried]), n_variants,
                                          avoid)
            url = endpoint.url
            if 200 <= answer.status < 300:
                try:
                    return (*self._reader.content(answer.body, url), endpoint)
                except CaptionError as err:
                    raise _InvalidAnswer(str(err), endpoint) from None
            if tried + 1 < len(FORMATS) and rejects_format(answer.status, answer.body):
                self._fall_back(tried, answer)
                continue
            raise self._reader.error(answer.status, answer.body, url, self._budget(n_variants))
        raise AssertionError("unreachable: the last format is never rejected as a format")

    def _fall_back(self, tried: int, answer: Answer) -> None:
        with self._format_lock:
            if self._format == tried:  # another thread may have stepped down already
                self._format = tried + 1
                log.warning("The server at %s rejected response_format %s (HTTP %s: %s); using %s.",
                            self.url, FORMATS[tried], answer.status, self._reader.excerpt(answer.body),
                            FORMATS[tried + 1])

    def _budget(self, n_variants: int) -> str:
        tokens = self.max_tokens or worst_case_chars(n_variants, self.max_len)
        return f"max_tokens={tokens} for {n_variants} variants"

    def _payload(self, png: bytes, n_variants: int, attempt: int, fmt: str) -> dict:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        payload = {
            "model": self.model,
            "messages": build_messages(uri, n_variants, self.family),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens or worst_case_chars(n_variants, self.max_len),
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

    def _send(self, payload: dict, n_variants: int, avoid: set = frozenset()) -> tuple[Answer, Endpoint]:
        """An answer from some server (preferring those not in `avoid`), moving to another when one
        fails. CaptionError when this tile failed max_retries + 1 times on every server still up."""
        data = json.dumps(payload).encode("utf-8")
        limit = answer_limit_bytes(n_variants, self.max_len, self.max_tokens)
        fails: collections.Counter = collections.Counter()
        tried_out: set[int] = set()
        last = ""
        preferred_out = set(avoid)
        while True:
            ticket = self._pool.acquire(tried_out | preferred_out)
            if ticket is None and preferred_out:
                preferred_out = set()  # only servers that gave a bad answer are left: they try again
                continue
            if ticket is None:
                raise CaptionError(f"every captioning server still up failed this tile "
                                   f"{self.max_retries + 1} times (last: {last})")
            outcome = self._attempt(ticket, data, limit, payload)
            if isinstance(outcome, Answer):
                return outcome, ticket.endpoint
            last = outcome
            fails[ticket.endpoint.index] += 1
            if fails[ticket.endpoint.index] > self.max_retries:
                tried_out.add(ticket.endpoint.index)

    def _attempt(self, ticket: Ticket, data: bytes, limit: int, payload: dict) -> Answer | str:
        """One request: its Answer, or the reason it failed in a way worth retrying."""
        exchange = Exchange(ticket.endpoint.target)
        self._live[id(exchange)] = exchange
        if self._cancel.is_set():
            exchange.abort()
        try:
            answer = exchange.post(data, send_timeout=self.timeout_s, body_timeout=self.timeout_s,
                                   still_waiting=self._pool.still_waiting(ticket), max_bytes=limit)
        except Aborted:
            self._pool.released(ticket)
            raise Cancelled("captioning was cancelled") from None
        except TooLarge as big:
            self._pool.answered(ticket, refused=True)
            raise TileRefused(
                f"the answer of the server at {ticket.endpoint.url} is too long: {big}, more than "
                f"any answer within max_tokens={payload['max_tokens']} can be; reading stopped there. "
                "The server ignores the answer schema and max_tokens") from None
        except TransportError as exc:
            return self._transport_failure(ticket, exc)
        except BaseException:  # KeyboardInterrupt on the main thread: give the slot back
            self._pool.released(ticket)
            raise
        finally:
            self._live.pop(id(exchange), None)
        sent_format = "response_format" in payload
        if answer.status in RETRY_STATUS and not (sent_format and rejects_format(answer.status, answer.body)) \
                and not self._reader.is_tile_refusal(answer.status, answer.body):
            reason = f"HTTP {answer.status}: {self._reader.excerpt(answer.body)}"
            self._pool.failed(ticket, reason, retry_after=_seconds(answer.headers.get("Retry-After")),
                              answered=True)
            return reason
        self._pool.answered(ticket, refused=answer.status >= 300, service_s=service_seconds(answer.body))
        return answer

    def _transport_failure(self, ticket: Ticket, exc: TransportError) -> str:
        """Drops an endpoint that cannot work in this run; otherwise backs it off. The reason."""
        url = ticket.endpoint.url
        if exc.kind == "refused" and not ticket.endpoint.reached:
            self._pool.drop(ticket, self._pool.refused_connection(ticket))
        elif exc.kind == "dns":
            self._pool.drop(ticket, f"Cannot find the captioning server {url}: {exc}. Check the host name.")
        elif exc.kind == "tls":
            self._pool.drop(ticket, f"TLS with the captioning server {url} failed: {exc}. "
                                    "Check https and the server's certificate.")
        else:
            reason = str(exc)
            if exc.kind == "timeout" and "timeout_s" not in reason:
                reason += f" (timeout_s={self.timeout_s:g} s)"
            self._pool.failed(ticket, reason, timed_out=exc.kind == "timeout", connected=exc.kind != "refused")
            return reason
        return str(exc)


def _auth_headers(url: str, key: str, secrets: list[str]) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
        return headers
    parts = urllib.parse.urlsplit(str(url).strip())
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        secrets.append(password)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    return headers


def _seconds(value: Optional[str]) -> Optional[float]:
    """A Retry-After in seconds; an HTTP-date gives None (the back-off alone is good enough)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


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
