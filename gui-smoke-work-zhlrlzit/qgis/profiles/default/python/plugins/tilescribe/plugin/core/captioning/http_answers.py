"""What an OpenAI-compatible server's answer means: captions, a refused tile, or a bad setting."""

from __future__ import annotations

import json
import math
import re
from typing import Mapping

from ..errors import CaptionError, ModelError

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_FORMAT_REJECTED_STATUS = frozenset({400, 422, 500})
_FORMAT_WORDS = re.compile(rb"response_format|json_schema|json_object|response format", re.I)
# A server error about this one image (llama-server: "failed to process image"): asking
# again sends the same image, so it is the tile's failure, not the server's.
_IMAGE_WORDS = re.compile(r"image|mtmd|clip|bitmap|decode", re.I)
_CONTEXT_WORDS = re.compile(r"context|too many tokens|max_tokens|exceeds|n_ctx", re.I)
_NO_VISION = re.compile(r"(not support|unsupported|no ).{0,40}(image|vision|multimodal)|"
                        r"(image|vision|multimodal).{0,40}(not support|unsupported|disabled)", re.I)
_EXCERPT = 200
_TOKENS_CAP = 10 ** 9


_TIMING = re.compile(rb'"(prompt_ms|predicted_ms)"\s*:\s*([0-9][0-9.eE+-]*)')


class TileRefused(CaptionError):
    """The server refused this tile's request: asking the same again cannot help."""


def rejects_format(status: int, body: bytes) -> bool:
    """Whether an error answer is about response_format, which a plainer format may avoid."""
    return status in _FORMAT_REJECTED_STATUS and bool(_FORMAT_WORDS.search(body[:4000]))


def lenient_count(value) -> int:
    """A token count from a usage field, 0 when it is junk ('n/a', NaN, 1e400, -3, true):
    it is only a statistic, never worth failing a tile or a run for."""
    if isinstance(value, bool):
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return int(number) if math.isfinite(number) and 0 <= number < _TOKENS_CAP else 0


def service_seconds(body: bytes) -> float | None:
    """Seconds the server spent on a request, from llama-server's `timings` (prompt +
    generation); None when the answer has none. Read without decoding the whole answer."""
    found = dict((name, lenient_count(value)) for name, value in _TIMING.findall(body[-4096:]))
    return sum(found.values()) / 1000 if found else None


class AnswerReader:
    """Reads answers of one server configuration; knows the secret to keep out of messages."""

    def __init__(self, model: str, api_key_env: str | None, secrets: tuple[str, ...]):
        self.model, self.api_key_env = model, api_key_env
        # A shorter one would blank out ordinary words.
        self.secrets = tuple(s for s in secrets if len(s) >= 6)

    def content(self, body: bytes, url: str) -> tuple[str, int]:
        """(content, completion tokens) of a 2xx body; CaptionError for a broken answer."""
        text = body.decode("utf-8", "replace")
        if text.lstrip()[:1] == "<":
            raise ModelError(
                f"The server at {url} answered with a web page, not an API answer "
                f"({self.excerpt(body)}). Check the URL: it should be an OpenAI-compatible "
                "API such as http://127.0.0.1:8000/v1."
            )
        try:
            data = json.loads(text, strict=False)
            message = data["choices"][0]["message"]
            content = message.get("content") or ""
        except (json.JSONDecodeError, RecursionError):
            raise CaptionError(f"the server's answer is not JSON: {self.excerpt(body)}") from None
        except (KeyError, IndexError, TypeError, AttributeError):
            raise CaptionError(
                f"the server's answer has no choices[0].message: {self.excerpt(body)}"
            ) from None
        if isinstance(content, list):  # some servers answer in content parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return str(content), lenient_count(usage.get("completion_tokens"))

    def error(self, status: int, body: bytes, url: str, budget: str) -> Exception:
        """The error for a non-2xx answer that is not retried: ModelError for a setting the
        user must fix (key, URL, model), TileRefused for a refusal of this one tile."""
        excerpt = self.excerpt(body)
        setting = self._setting_error(status, excerpt, url)
        if setting is not None:
            return setting
        if status == 413:
            return TileRefused(
                f"the server at {url} refused the tile as too large (HTTP 413: {excerpt}); raise the "
                "server's request size limit, or index with a smaller --tile-size")
        if _CONTEXT_WORDS.search(excerpt):
            return TileRefused(
                f"the request does not fit the context of the server at {url} (HTTP {status}: "
                f"{excerpt}); the answer budget is {budget}: use fewer --variants, or start the "
                "server with a larger context (llama-server -c, which -np slots share; "
                "vLLM --max-model-len)")
        return TileRefused(f"the server at {url} refused this tile (HTTP {status}: {excerpt})")

    def _setting_error(self, status: int, excerpt: str, url: str) -> ModelError | None:
        if status in (401, 403):
            fix = (f"Check the key in the environment variable {self.api_key_env}"
                   if self.api_key_env else "Put the server's API key in an environment variable "
                   "and name that variable in the API key setting (api_key_env)")
            return ModelError(f"The captioning server at {url} refused the request "
                              f"(HTTP {status}: {excerpt}). {fix}.")
        if status in (404, 405):
            return ModelError(
                f"The captioning server at {url} answered {status} ({excerpt}): the model "
                f"{self.model!r} is not served there, or the URL is not the API root. Check the "
                "model name (GET /v1/models lists them) and that the URL is the server root "
                "or ends in /v1.")
        if 300 <= status < 400:
            return ModelError(f"The captioning server at {url} redirects (HTTP {status}). "
                              "Give the URL it redirects to (https?) in the settings.")
        if _NO_VISION.search(excerpt):
            return ModelError(
                f"The captioning server at {url} cannot read images (HTTP {status}: {excerpt}). "
                "Serve a vision model: llama-server needs --mmproj, vLLM a multimodal model.")
        return None

    def is_tile_refusal(self, status: int, body: bytes) -> bool:
        """A 5xx about the image itself: the same request would fail again."""
        return status >= 500 and bool(_IMAGE_WORDS.search(self.excerpt(body)))

    def excerpt(self, body: bytes) -> str:
        """The server's error message, or the start of its body, with our own secret removed."""
        text = body[:_EXCERPT * 20].decode("utf-8", "replace")
        try:
            error = json.loads(text, strict=False).get("error")
            text = str(error.get("message", error)) if isinstance(error, dict) else str(error or text)
        except (ValueError, AttributeError, RecursionError):
            pass
        text = " ".join(text.split())
        for secret in self.secrets:
            text = text.replace(secret, "***")  # a server may echo the key it refused
        return repr(text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""))


def answer_limit_bytes(n_variants: int, max_len: Mapping[str, int], max_tokens: int | None) -> int:
    """The most bytes read from a 2xx answer: the longest answer the schema allows, every
    character escaped twice over (JSON in JSON, \\uXXXX), plus room for the envelope."""
    chars = worst_case_chars(n_variants, max_len)
    if max_tokens:
        chars = max(chars, 16 * int(max_tokens))  # a token is rarely over 16 characters
    return 16 * chars + (256 << 10)


def worst_case_chars(n_variants: int, max_len: Mapping[str, int]) -> int:
    """Every string at its maxLength plus JSON punctuation: the longest answer the schema allows."""
    return n_variants * (sum(max_len.values()) + 40) + 20
