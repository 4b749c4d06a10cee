"""In-process captioning with a GGUF vision-language model (model + mmproj) via llama-cpp-python."""

from __future__ import annotations

import base64
import collections
import os
from pathlib import Path
from typing import Mapping

from ..errors import CaptionError, ModelError
from ..raster.rendering import DEFAULT_MAX_SIDE
from .base import DEFAULT_MAX_ATTEMPTS, CaptionResult, caption_with_retries, file_fingerprint
from .context_budget import SAMPLE_ANSWER, ContextPlan, estimate_image_tokens, plan_context
from .gguf_header import GgufInfo, read_gguf_info
from .model_pair import CHAT_HANDLERS, FAMILIES, check_pair, guess_family  # noqa: F401 (re-exported)
from .prompt import PROMPT_VERSION, build_messages, build_prompt, field_max_len, response_schema

# A rejected answer is regenerated hotter: small models at the paper's 0.3 often
# copy their first variant N times, and the same temperature repeats the fault.
RETRY_TEMPERATURE_STEP = 0.3
MAX_RETRY_TEMPERATURE = 1.0
_SETUP_HINT = "Run `make setup` to install it into the plugin's environment."


class _NativeLog:
    """Collects llama.cpp / mtmd log lines instead of printing them to stderr.

    verbose=False does not silence the multimodal library (RECIPES.md); keeping
    the lines lets a load failure report llama.cpp's own reason.
    """

    def __init__(self, llama_cpp, mtmd_cpp):
        self.lines: collections.deque[str] = collections.deque(maxlen=20)

        def record(level, text, _user_data):
            # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation. Only errors
            # explain a failed load. (llama_cpp._logger maps these numbers as the older
            # 0..4 enum, so its own filtering by level is off by one.)
            if level == 4 and text:
                self.lines.append(text.decode("utf-8", "replace").strip())

        # ctypes frees a callback that Python no longer references, and C keeps calling it.
        self._callback = llama_cpp.llama_log_callback(record)
        llama_cpp.llama_log_set(self._callback, None)
        mtmd_cpp.mtmd_log_set(self._callback, None)
        mtmd_cpp.mtmd_helper_log_set(self._callback, None)

    def take(self) -> str:
        text = " | ".join(line for line in self.lines if line)
        self.lines.clear()
        return f" llama.cpp said: {text}" if text else ""


_native_log: _NativeLog | None = None


def _import_llama_cpp():
    """llama_cpp and its chat-format module, imported only when a model is loaded."""
    global _native_log
    # llama.cpp's OpenMP workers spin between graph runs by default; on a busy
    # machine (QGIS, other jobs) the spinning starves the Python thread that
    # samples under the grammar. Sleeping workers measured 2-4x faster on 2 busy
    # cores. libgomp reads this once, when llama_cpp's libraries load.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
        import llama_cpp.llama_chat_format as chat_format
        import llama_cpp.mtmd_cpp as mtmd_cpp
    except (ImportError, OSError) as exc:
        raise ModelError(f"llama-cpp-python cannot be imported ({exc}). {_SETUP_HINT}") from exc
    if _native_log is None:
        _native_log = _NativeLog(llama_cpp, mtmd_cpp)
    return llama_cpp, chat_format, _native_log


class LlamaCppCaptioner:
    """Captions tiles with a local GGUF vision-language model, loaded once.

    `family` picks the chat template (CHAT_HANDLERS); "auto" guesses it from the
    files. Answers are constrained to the caption JSON schema by a grammar.
    One caption at a time: a llama.cpp context is not thread-safe.
    """

    backend = "llama.cpp"

    def __init__(
        self,
        model_path: str | os.PathLike,
        mmproj_path: str | os.PathLike,
        *,
        family: str = "auto",
        n_threads: int | None = None,
        n_ctx: int | None = None,
        n_gpu_layers: int = 0,
        seed: int = 0,
        temperature: float = 0.3,
        max_tokens: int | None = None,
        max_len: int | Mapping[str, int] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        n_variants: int = 5,
        image_px: int = DEFAULT_MAX_SIDE,
        force_answer_tokens: int | None = None,
    ):
        if family not in FAMILIES:
            raise ModelError(
                f"Unknown model family {family!r} in the captioning settings; "
                f"choose one of: {', '.join(FAMILIES)}."
            )
        model = read_gguf_info(model_path, "model")
        mmproj = read_gguf_info(mmproj_path, "mmproj")
        check_pair(model, mmproj)
        self.model_path, self.mmproj_path = model.path, mmproj.path
        self.family = guess_family(model, mmproj) if family == "auto" else family
        self._requested_family = family
        self._info = {"model_architecture": model.arch, "projector_type":
                      str(mmproj.fields.get("clip.projector_type", ""))}
        self._fingerprints = {"model": file_fingerprint(model.path),
                              "mmproj": file_fingerprint(mmproj.path)}
        self.n_threads = n_threads
        self.n_gpu_layers, self.seed = n_gpu_layers, seed
        self.temperature, self.max_attempts = temperature, max_attempts
        # Benchmarks only: answers of exactly this many tokens (random weights never stop).
        self.force_answer_tokens = force_answer_tokens
        self._n_ctx_setting = "auto" if n_ctx is None else n_ctx
        self.plan = plan_model_context(model, mmproj, n_ctx, field_max_len(max_len), n_variants, image_px)
        self.n_ctx, self.max_len = self.plan.n_ctx, self.plan.max_len
        self.max_tokens = min(max_tokens, self.plan.max_tokens) if max_tokens else self.plan.max_tokens
        self.warnings = self.plan.warnings
        self.last_stats: dict = {}
        self._llm = self._load()
        self.n_threads = self._llm.n_threads  # None picks half the CPUs (llama-cpp-python)
        self._budget_completions(self._llm)

    def _budget_completions(self, llm) -> None:
        """Clamp every answer to the room the actual prompt + image leave in the context.

        The chat handler evaluates text and image chunks, then calls create_completion
        with the positions used so far as `prompt`: the one place the exact count is known.
        """
        complete = llm.create_completion
        stats = self.last_stats

        def budgeted(*args, prompt=None, max_tokens=None, **kwargs):
            used = len(prompt) if prompt is not None else 0
            room = llm.n_ctx() - used - 1
            if room < 16:
                raise CaptionError(
                    f"this tile's prompt and image fill the context ({used} of n_ctx={llm.n_ctx()} "
                    "tokens), leaving no room for an answer: raise n_ctx or lower the tile size")
            budget = min(max_tokens or room, room)
            stats.update(prompt_tokens=used, max_tokens=budget)
            if self.force_answer_tokens:  # under the grammar a random model rarely closes early
                budget = min(self.force_answer_tokens, room)
                kwargs["stopping_criteria"] = _exactly(budget, used, kwargs.get("stopping_criteria"))
            return complete(*args, prompt=prompt, max_tokens=budget, **kwargs)

        llm.create_completion = budgeted

    def _load(self):
        llama_cpp, chat_format, native_log = _import_llama_cpp()
        native_log.take()  # forget lines from earlier loads
        handler_class = getattr(chat_format, CHAT_HANDLERS[self.family])
        try:
            handler = handler_class(clip_model_path=str(self.mmproj_path), verbose=False)
        except ValueError as exc:
            raise self._load_error("mmproj", self.mmproj_path, exc, native_log) from exc
        try:
            llm = llama_cpp.Llama(
                model_path=str(self.model_path), chat_handler=handler, n_ctx=self.n_ctx,
                n_threads=self.n_threads, n_gpu_layers=self.n_gpu_layers, seed=self.seed,
                verbose=False,
            )
        except ValueError as exc:
            raise self._load_error("model", self.model_path, exc, native_log) from exc
        except Exception as exc:  # llama-cpp-python compiles the GGUF's chat template at load
            raise _template_error(self.model_path, exc) from exc
        try:
            # The handler loads the projector on first use (a private method, hence
            # getattr); loading it now reports a bad mmproj at open, not on the first tile.
            init_projector = getattr(handler, "_init_mtmd_context", None)
            if init_projector is not None:
                init_projector(llm)
        except ValueError as exc:
            llm.close()
            raise self._load_error("mmproj", self.mmproj_path, exc, native_log) from exc
        return llm

    def _load_error(self, role: str, path: Path, exc: Exception, native_log) -> ModelError:
        return ModelError(
            f"llama.cpp cannot load the {role} file {path}: {exc}.{native_log.take()} "
            f"Check that it is a complete GGUF that this llama-cpp-python supports and that "
            "the model and mmproj belong together."
        )

    def describe(self) -> dict:
        """Backend, file names with fingerprints, family and settings; never a folder path."""
        return {
            "backend": self.backend,
            "llama_cpp_version": _llama_cpp_version(),
            "model": self._fingerprints["model"],
            "mmproj": self._fingerprints["mmproj"],
            **self._info,
            "family": self.family,
            "family_setting": self._requested_family,
            "chat_handler": CHAT_HANDLERS[self.family],
            "prompt_version": PROMPT_VERSION,
            "settings": {
                "n_ctx": self.n_ctx, "n_ctx_setting": self._n_ctx_setting, "n_threads": self.n_threads,
                "n_gpu_layers": self.n_gpu_layers, "seed": self.seed,
                "temperature": self.temperature, "retry_temperature_step": RETRY_TEMPERATURE_STEP,
                "max_tokens": self.max_tokens,
                "max_len": dict(self.max_len), "max_attempts": self.max_attempts,
            },
        }

    def caption(self, png: bytes, n_variants: int) -> CaptionResult:
        """`n_variants` valid variants for a PNG tile; CaptionError after max_attempts tries."""
        if self._llm is None:
            raise ModelError(f"The captioner of {self.model_path.name} was closed; open a new one.")
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise CaptionError("the tile image given to the captioner is not a PNG")
        return caption_with_retries(
            self._generate, png, n_variants,
            max_attempts=self.max_attempts, label=f"The model {self.model_path.name}",
        )

    def _generate(self, png: bytes, n_variants: int, attempt: int) -> tuple[str, int]:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        schema = response_schema(n_variants, self.max_len)
        try:
            answer = self._llm.create_chat_completion(
                messages=build_messages(uri, n_variants, self.family),
                response_format={"type": "json_object", "schema": schema},
                temperature=self._temperature(attempt),
                # Clamped per tile to the room the prompt and image leave (_budget_completions).
                max_tokens=self.max_tokens,
                # A new seed per attempt: the same seed would repeat a rejected answer.
                seed=(self.seed + attempt) & 0xFFFFFFFF,
            )
        except ValueError as exc:
            raise self._generation_error(exc) from exc
        except RuntimeError as exc:  # llama_decode failed: this tile's call, not the model
            raise CaptionError(
                f"llama.cpp failed while answering for this tile ({exc}); n_ctx={self.n_ctx}. "
                "It is retried on the next run; raise n_ctx if it keeps failing") from exc
        choice = answer["choices"][0]
        text = choice["message"].get("content") or ""
        used = int(answer.get("usage", {}).get("completion_tokens", 0) or 0)
        self.last_stats.update(completion_tokens=used, finish_reason=choice.get("finish_reason"))
        if choice.get("finish_reason") == "length" and not self.force_answer_tokens:
            raise CaptionError(
                f"the answer was cut off at its budget of {used} tokens before the JSON closed "
                f"(n_ctx={self.n_ctx}); a model that rambles needs a larger n_ctx or fewer variants")
        return text, used

    def _temperature(self, attempt: int) -> float:
        ceiling = max(MAX_RETRY_TEMPERATURE, self.temperature)
        return min(self.temperature + RETRY_TEMPERATURE_STEP * attempt, ceiling)

    def _generation_error(self, exc: ValueError) -> Exception:
        message = str(exc)
        if "n_ctx" in message or "context window" in message or "broadcast" in message:
            # This tile's prompt + image did not fit: the tile fails, the run goes on (and
            # stops by itself if every tile fails the same way).
            return CaptionError(
                f"the prompt and image of this tile do not fit in the context of "
                f"{self.model_path.name} (n_ctx={self.n_ctx}): {message}. Raise n_ctx in the "
                "captioning settings (or leave it on auto), or lower the tile's pixel size.")
        return CaptionError(f"llama.cpp failed on this tile: {message}")

    def close(self) -> None:
        """Frees the model and projector; calling it again does nothing."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    def __enter__(self) -> "LlamaCppCaptioner":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def plan_model_context(model: GgufInfo, mmproj: GgufInfo, n_ctx, max_len, n_variants: int,
                       image_px: int = DEFAULT_MAX_SIDE) -> ContextPlan:
    """The context size and answer budget for one sequence, from the vocabulary alone.

    The vocabulary loads in a blink (no weights): it tells how long the prompt is and how
    many tokens a character of caption costs with this model.
    """
    if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1):
        raise ModelError(f"n_ctx must be a positive number of tokens (or auto), not {n_ctx!r}.")
    llama_cpp, _, native_log = _import_llama_cpp()
    try:
        vocab = llama_cpp.Llama(model_path=str(model.path), vocab_only=True, verbose=False)
    except ValueError as exc:
        raise ModelError(f"llama.cpp cannot load the model file {model.path} (reading its vocabulary): "
                         f"{exc}.{native_log.take()} Check that it is a complete GGUF that this "
                         "llama-cpp-python supports.") from exc
    except Exception as exc:  # llama-cpp-python compiles the GGUF's chat template at load
        raise _template_error(model.path, exc) from exc
    try:
        sample = SAMPLE_ANSWER.encode("utf-8")
        per_char = len(vocab.tokenize(sample, add_bos=False)) / len(sample)
        prompt_tokens = len(vocab.tokenize(build_prompt(n_variants).encode("utf-8")))
    finally:
        vocab.close()
    trained = model.fields.get(f"{model.arch}.context_length")
    return plan_context(
        n_variants=n_variants, max_len=max_len, tokens_per_char=per_char,
        prompt_tokens=prompt_tokens, image_tokens=estimate_image_tokens(mmproj, image_px),
        requested_n_ctx=n_ctx, n_ctx_train=int(trained) if trained else None,
        model_name=model.path.name)


def _template_error(path, exc: Exception) -> ModelError:
    return ModelError(
        f"The model file {path} carries a chat template llama-cpp-python cannot read "
        f"({type(exc).__name__}: {exc}). Use another copy of the model, or a model file "
        "converted with a current llama.cpp.")


def _llama_cpp_version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "unknown"))


def _exactly(tokens: int, prompt_positions: int, others=None):
    """Benchmarks: stop after exactly `tokens` answer tokens. max_tokens alone lets llama-cpp-python
    go on past it while the text ends inside a multi-byte UTF-8 character (random weights pick byte
    tokens): 801 tokens for 800 asked, where llama-server stops at 800."""
    from llama_cpp import StoppingCriteriaList

    def enough(input_ids, logits) -> bool:
        return len(input_ids) - prompt_positions >= tokens  # the answer's tokens evaluated so far

    return StoppingCriteriaList([enough, *(others or [])])
