"""Captioning through a llama-server that TileScribe starts, owns and stops (`--engine server`).

llama.cpp's own server batches several tiles at once in "slots" and keeps the fixed
instructions in its prompt cache: on a CPU it generates 2-4x more tokens per second in
total than one sequence in process. The model files are checked exactly as for the
in-process engine; the requests go through the OpenAI-compatible backend.
"""

from __future__ import annotations

import threading
from typing import Optional

from ..errors import ModelError, describe_exit
from ..raster.rendering import DEFAULT_MAX_SIDE
from .base import DEFAULT_MAX_ATTEMPTS, CaptionResult, file_fingerprint
from .gguf_header import read_gguf_info
from .http_backend import OpenAICompatibleCaptioner
from .llama_backend import plan_model_context
from .llama_server import SERVER_JINJA_TEMPLATES, SERVER_TEMPLATES, LlamaServer, ServerOptions, find_llama_server
from .model_pair import FAMILIES, check_pair, guess_family
from .prompt import PROMPT_VERSION, field_max_len

DEFAULT_SLOTS = 4
SERVED_MODEL_NAME = "tilescribe"  # llama-server serves one model whatever the name asked


class LlamaServerCaptioner:
    """Starts llama-server with `slots` parallel sequences and captions through it.

    If the server dies mid-run it is restarted once; a second death ends the run with
    EngineError (every tile captioned before is kept).
    """

    backend = "llama.cpp"
    engine = "llama-server"

    def __init__(self, model_path, mmproj_path, *, family: str = "auto", slots: int = DEFAULT_SLOTS,
                 n_ctx: Optional[int] = None, n_threads: Optional[int] = None, n_gpu_layers: int = 0,
                 seed: int = 0, temperature: float = 0.3, llama_server: Optional[str] = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, n_variants: int = 5,
                 image_px: int = DEFAULT_MAX_SIDE, timeout_s: float = 600.0,
                 max_len: Optional[int | dict] = None):
        if family not in FAMILIES:
            raise ModelError(f"Unknown model family {family!r} in the captioning settings; "
                             f"choose one of: {', '.join(FAMILIES)}.")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ModelError(f"The number of llama-server slots must be at least 1, not {slots!r}.")
        model, mmproj = read_gguf_info(model_path, "model"), read_gguf_info(mmproj_path, "mmproj")
        check_pair(model, mmproj)
        self.model_path, self.mmproj_path = model.path, mmproj.path
        self.family = guess_family(model, mmproj) if family == "auto" else family
        self._requested_family = family
        self._projector = str(mmproj.fields.get("clip.projector_type", ""))
        self._fingerprints = {"model": file_fingerprint(model.path), "mmproj": file_fingerprint(mmproj.path)}
        # n_ctx is per slot: each tile in flight needs room for its own prompt, image and answer.
        self.plan = plan_model_context(model, mmproj, n_ctx, field_max_len(max_len), n_variants, image_px)
        self.warnings = self.plan.warnings
        self.slots, self.seed, self.temperature = slots, seed, temperature
        self.max_attempts, self.timeout_s = max_attempts, timeout_s
        self.n_gpu_layers = n_gpu_layers
        self.server = LlamaServer(find_llama_server(llama_server), ServerOptions(
            model.path, mmproj.path, slots, self.plan.n_ctx, n_threads, n_gpu_layers,
            SERVER_TEMPLATES.get(self.family), SERVER_JINJA_TEMPLATES.get(self.family)))
        self._restart_lock = threading.Lock()
        self.server.start()
        self.build = self._build_info()
        self._client = self._connect()

    @property
    def parallel_requests(self) -> int:
        return self.slots  # the indexer keeps this many tiles in flight

    def _connect(self) -> OpenAICompatibleCaptioner:
        return OpenAICompatibleCaptioner(
            self.server.url, SERVED_MODEL_NAME, api_key=self.server.api_key, family=self.family,
            parallel_requests=self.slots, timeout_s=self.timeout_s, temperature=self.temperature,
            # Our own server on loopback: a refused connection means it died; find out fast.
            max_retries=2, backoff_s=0.25,
            max_tokens=self.plan.max_tokens, max_attempts=self.max_attempts, seed=self.seed,
            max_len=self.plan.max_len)

    def _build_info(self) -> str:
        try:
            props = self.server.props()
        except (OSError, ValueError):
            return "unknown"
        return str(props.get("build_info") or props.get("build") or "unknown")

    def describe(self) -> dict:
        return {
            "backend": self.backend, "engine": self.engine, "llama_server_build": self.build,
            "model": self._fingerprints["model"], "mmproj": self._fingerprints["mmproj"],
            "projector_type": self._projector, "family": self.family,
            "family_setting": self._requested_family,
            "chat_template": SERVER_TEMPLATES.get(self.family) or (
                f"tilescribe's {self.family} template" if self.family in SERVER_JINJA_TEMPLATES else "from the GGUF"),
            "prompt_version": PROMPT_VERSION,
            "settings": {"n_ctx": self.plan.n_ctx, "slots": self.slots, "n_gpu_layers": self.n_gpu_layers,
                         "seed": self.seed, "temperature": self.temperature,
                         "max_tokens": self.plan.max_tokens, "max_len": dict(self.plan.max_len),
                         "max_attempts": self.max_attempts, "timeout_s": self.timeout_s},
        }

    def caption(self, png: bytes, n_variants: int) -> CaptionResult:
        client = self._client
        try:
            return client.caption(png, n_variants)
        except ModelError as exc:
            with self._restart_lock:  # a restart under way: wait for it, then see which client is current
                current = self._client
            if current is not client:  # restarted while this tile was in flight on the old port
                return current.caption(png, n_variants)
            if self.server.alive():
                raise
            self._restart(client, exc)
        return self._client.caption(png, n_variants)

    def _restart(self, failed_client, exc: Exception) -> None:
        """Restart a dead server once (threads that saw it die together restart it once)."""
        with self._restart_lock:
            if self._client is not failed_client and self.server.alive():
                return  # another thread already restarted it
            code = self.server.process.returncode if self.server.process else None
            self.server.ensure_running(f"{describe_exit(code)}: {exc}")
            self._client = self._connect()

    def cancel(self) -> None:
        """Ends the requests under way within a second (a second Ctrl-C)."""
        self._client.cancel()

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> "LlamaServerCaptioner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
