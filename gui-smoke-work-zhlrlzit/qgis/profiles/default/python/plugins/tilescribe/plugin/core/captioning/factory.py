"""Captioner settings as plain data (CLI, worker, plugin) and the one place backends are built."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Union

from ..errors import ModelError
from ..bounds import bounded
from . import defaults

TEST_MODEL_MAX_LEN = 16
# In process (simplest, the default) or a llama-server TileScribe starts (batched slots).
ENGINES = ("llama-cpp-python", "server")
TEST_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tilescribe" / "test-models"


@dataclass(frozen=True)
class CaptionerSettings:
    """Which model writes the captions: a local GGUF pair, a server, or the tiny test model."""

    model: Optional[str] = None          # GGUF text model
    mmproj: Optional[str] = None         # GGUF vision projector
    family: str = "auto"                 # chat template family (see llama_backend.CHAT_HANDLERS)
    # OpenAI-compatible endpoint instead of a local model: a URL, or several (a list or tuple)
    # that share the tiles.
    server_url: Union[str, tuple, None] = bounded(None, kind="urls")
    server_model: Optional[str] = None
    api_key_env: Optional[str] = None    # name of the environment variable holding the key
    parallel_requests: int = bounded(defaults.PARALLEL_REQUESTS, 1, 256)  # requests in flight, per server
    timeout_s: float = bounded(defaults.TIMEOUT_S, above=0, high=86400)  # silence before a retry
    n_threads: Optional[int] = bounded(None, 1, 1024)
    n_ctx: Optional[int] = bounded(None, 1, 1 << 22)  # None: sized for prompt + image + answer (per slot)
    n_gpu_layers: int = bounded(0, -1, 100000)
    engine: str = defaults.ENGINE        # for a local GGUF pair: see ENGINES
    slots: int = bounded(defaults.SLOTS, 1, 256)  # llama-server sequences decoded together (engine "server")
    llama_server: Optional[str] = None   # llama-server program; None: built by setup, else PATH
    seed: int = bounded(0, 0, 2 ** 32 - 1)
    temperature: float = bounded(0.3, 0, 2)
    test_model: bool = False             # tiny random-weight pair: meaningless captions

    def __post_init__(self):
        if isinstance(self.server_url, list):  # JSON gives a list back: keep the value hashable
            object.__setattr__(self, "server_url", tuple(self.server_url))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CaptionerSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"Unknown captioner settings: {', '.join(sorted(unknown))}.")
        return cls(**data)

    @classmethod
    def from_environment(cls) -> "CaptionerSettings":
        """TILESCRIBE_MODEL + TILESCRIBE_MMPROJ, or TILESCRIBE_SERVER_URL (+ _SERVER_MODEL;
        several URLs separated by spaces); the tiny test model when none is set."""
        env = os.environ
        if env.get("TILESCRIBE_SERVER_URL"):
            return cls(server_url=env["TILESCRIBE_SERVER_URL"],
                       server_model=env.get("TILESCRIBE_SERVER_MODEL", "default"),
                       api_key_env=env.get("TILESCRIBE_API_KEY_ENV"))
        if env.get("TILESCRIBE_MODEL") or env.get("TILESCRIBE_MMPROJ"):
            return cls(model=env.get("TILESCRIBE_MODEL"), mmproj=env.get("TILESCRIBE_MMPROJ"),
                       family=env.get("TILESCRIBE_FAMILY", "auto"))
        return cls(test_model=True)

    @property
    def is_placeholder(self) -> bool:
        return self.test_model



# The captioner's defaults as one object, for the CLI and the QGIS settings (a literal repeated
# elsewhere drifts); the values themselves live in defaults.py.
DEFAULT_CAPTIONER = CaptionerSettings()


def make_captioner(settings: CaptionerSettings):
    """Build (and load) the captioner the settings describe."""
    if settings.server_url:
        from .http_backend import OpenAICompatibleCaptioner, redact_url

        if not settings.server_model:  # the URL may hold a password: shown redacted
            raise ModelError(f"Give the model name to ask {redact_url(settings.server_url)} for (--server-model).")

        return OpenAICompatibleCaptioner(
            settings.server_url, settings.server_model, api_key_env=settings.api_key_env,
            parallel_requests=settings.parallel_requests, temperature=settings.temperature,
            seed=settings.seed, timeout_s=settings.timeout_s,
        )
    if settings.engine not in ENGINES:
        raise ModelError(f"Unknown captioning engine {settings.engine!r}: choose one of {', '.join(ENGINES)}.")
    model, mmproj = settings.model, settings.mmproj
    max_len = None
    if settings.test_model:
        # Random weights fill every string to its limit; short limits keep the answer
        # inside the tiny model's context and the run fast.
        max_len = TEST_MODEL_MAX_LEN
        from .tiny_gguf import write_tiny_pair

        model, mmproj = write_tiny_pair(TEST_MODEL_DIR)
    if not model or not mmproj:
        raise ModelError(
            "No captioning model set: give --model M.gguf and --mmproj P.gguf (a GGUF "
            "vision-language model and its projector), or --server URL --server-model NAME, "
            "or --test-model for the tiny placeholder model."
        )
    if settings.engine == "server":
        from .server_engine import LlamaServerCaptioner

        if settings.test_model:
            raise ModelError("The test model runs in process only: drop --engine server or --test-model.")
        return LlamaServerCaptioner(
            model, mmproj, family=settings.family, slots=settings.slots, n_ctx=settings.n_ctx,
            n_threads=settings.n_threads, n_gpu_layers=settings.n_gpu_layers, seed=settings.seed,
            temperature=settings.temperature, llama_server=settings.llama_server,
        )
    from .llama_backend import LlamaCppCaptioner

    return LlamaCppCaptioner(
        model, mmproj, family=settings.family, n_threads=settings.n_threads, n_ctx=settings.n_ctx,
        n_gpu_layers=settings.n_gpu_layers, seed=settings.seed, temperature=settings.temperature,
        max_len=max_len,
    )
