"""In-process captioning with a GGUF vision-language model (model + mmproj) via llama-cpp-python."""

from __future__ import annotations

import base64
import collections
import os
from pathlib import Path
from typing import Mapping

from ..errors import CaptionError, ModelError
from .base import DEFAULT_MAX_ATTEMPTS, CaptionResult, caption_with_retries, file_fingerprint
from .gguf_header import GgufInfo, read_gguf_info
from .prompt import PROMPT_VERSION, build_prompt, field_max_len, response_schema

# family -> llama_cpp.llama_chat_format handler. The handler supplies the chat
# template the model was trained with; a wrong one gives poor or empty answers.
CHAT_HANDLERS: Mapping[str, str] = {
    "llava-1-5": "Llava15ChatHandler",  # LLaVA 1.5, BakLLaVA, ShareGPT4V, obsidian
    "llava-1-6": "Llava16ChatHandler",  # LLaVA 1.6 / NeXT (mmproj with grid pinpoints)
    "moondream": "MoondreamChatHandler",  # moondream2
    "nanollava": "NanoLlavaChatHandler",  # nanoLLaVA (ChatML)
    "qwen2.5-vl": "Qwen25VLChatHandler",  # Qwen2.5-VL (projector qwen2.5vl_merger)
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",  # MiniCPM-V 2.6 (projector resampler)
}
FAMILIES = ("auto", *CHAT_HANDLERS)
# A rejected answer is regenerated hotter: small models at the paper's 0.3 often
# copy their first variant N times, and the same temperature repeats the fault.
RETRY_TEMPERATURE_STEP = 0.3
MAX_RETRY_TEMPERATURE = 1.0
_SETUP_HINT = "Run `make setup` to install it into the plugin's environment."

# projector type -> (tensor, ggml axis) holding the size of the projected image
# embeddings, as clip_n_mmproj_embd() reads it; it must equal the text model's n_embd.
_PROJECTOR_OUTPUT = {
    "mlp": ("mm.2.weight", 1),
    "mlp_norm": ("mm.3.bias", 0),
    "ldp": ("mm.model.mb_block.1.block.2.1.bias", 0),
    "ldpv2": ("mm.model.peg.0.bias", 0),
    "resampler": ("resampler.proj.weight", 0),
    "qwen2vl_merger": ("mm.1.bias", 0),
    "qwen2.5vl_merger": ("mm.1.bias", 0),
    "gemma3": ("mm.input_projection.weight", 0),
    "idefics3": ("mm.model.fc.weight", 1),
}


def projector_output_dim(mmproj: GgufInfo) -> int | None:
    """Size of the image embeddings an mmproj produces, when its projector type is known."""
    kind = str(mmproj.fields.get("clip.projector_type", ""))
    if kind == "mlp" and "mm.3.weight" in mmproj.tensors:
        kind = "mlp_norm"  # clip.cpp makes the same switch for Yi-style LLaVA
    tensor, axis = _PROJECTOR_OUTPUT.get(kind, (None, 0))
    shape = mmproj.tensors.get(tensor)
    return int(shape[axis]) if shape is not None and len(shape) > axis else None


def embedding_length(model: GgufInfo) -> int | None:
    value = model.fields.get(f"{model.arch}.embedding_length")
    return int(value) if value is not None else None


def check_pair(model: GgufInfo, mmproj: GgufInfo) -> None:
    """ModelError when the two files cannot work together, before llama.cpp loads them."""
    if model.arch == "clip":
        raise ModelError(
            f"The model file {model.path} is a vision projector (mmproj), not a language model. "
            "Give the text model GGUF as the model and this file as the mmproj."
        )
    if mmproj.arch != "clip":
        raise ModelError(
            f"The mmproj file {mmproj.path} is a '{mmproj.arch or 'unknown'}' model, not a vision "
            "projector: a model without vision support cannot caption images. Give the mmproj "
            "GGUF that belongs to the vision model (its name usually contains 'mmproj')."
        )
    has_vision = mmproj.fields.get("clip.has_vision_encoder")
    if not has_vision:
        raise ModelError(
            f"The mmproj file {mmproj.path} has no vision encoder (an audio projector?). "
            "Give the image projector of a vision-language model."
        )
    projected, expected = projector_output_dim(mmproj), embedding_length(model)
    if projected and expected and projected != expected:
        raise ModelError(
            f"The mmproj file {mmproj.path} does not match the model {model.path}: it makes image "
            f"embeddings of size {projected}, the model expects {expected}. Use the mmproj "
            "released with this model."
        )


def guess_family(model: GgufInfo, mmproj: GgufInfo) -> str:
    """The chat family from projector metadata, then file and model names; llava-1-5 otherwise."""
    kind = str(mmproj.fields.get("clip.projector_type", ""))
    if kind == "qwen2.5vl_merger":
        return "qwen2.5-vl"
    if kind == "resampler":
        return "minicpm-v-2.6"
    names = " ".join(
        [model.path.name, mmproj.path.name, model.name, mmproj.name]
    ).lower().replace("_", "-")
    for needle, family in (
        ("moondream", "moondream"),
        ("nanollava", "nanollava"),
        ("minicpm", "minicpm-v-2.6"),
        ("qwen2.5-vl", "qwen2.5-vl"),
        ("llava-v1.6", "llava-1-6"),
        ("llava-1.6", "llava-1-6"),
        ("llava-next", "llava-1-6"),
    ):
        if needle in names:
            return family
    if mmproj.fields.get("clip.vision.mm_patch_merge_type") == "spatial_unpad":
        return "llava-1-6"  # LLaVA 1.6 tiles large images; 1.5 does not
    return "llava-1-5"


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
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        seed: int = 0,
        temperature: float = 0.3,
        max_tokens: int | None = None,
        max_len: int | Mapping[str, int] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
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
        self.n_ctx, self.n_gpu_layers, self.seed = n_ctx, n_gpu_layers, seed
        self.temperature, self.max_tokens, self.max_attempts = temperature, max_tokens, max_attempts
        self.max_len = field_max_len(max_len)
        self._llm = self._load()
        self.n_threads = self._llm.n_threads  # None picks half the CPUs (llama-cpp-python)

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
            raise ModelError(
                f"The model file {self.model_path} carries a chat template llama-cpp-python cannot "
                f"read ({type(exc).__name__}: {exc}). Use another copy of the model, or a model "
                "file converted with a current llama.cpp."
            ) from exc
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
                "n_ctx": self.n_ctx, "n_threads": self.n_threads,
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
        messages = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}},
            {"type": "text", "text": build_prompt(n_variants)},
        ]}]
        schema = response_schema(n_variants, self.max_len)
        try:
            answer = self._llm.create_chat_completion(
                messages=messages,
                response_format={"type": "json_object", "schema": schema},
                temperature=self._temperature(attempt),
                # None: bounded by the schema's maxLength and by n_ctx. A fixed
                # default cuts answers off: tiny models spend up to 4 byte tokens a character.
                max_tokens=self.max_tokens,
                # A new seed per attempt: the same seed would repeat a rejected answer.
                seed=(self.seed + attempt) & 0xFFFFFFFF,
            )
        except ValueError as exc:
            raise self._generation_error(exc) from exc
        text = answer["choices"][0]["message"].get("content") or ""
        return text, int(answer.get("usage", {}).get("completion_tokens", 0))

    def _temperature(self, attempt: int) -> float:
        ceiling = max(MAX_RETRY_TEMPERATURE, self.temperature)
        return min(self.temperature + RETRY_TEMPERATURE_STEP * attempt, ceiling)

    def _generation_error(self, exc: ValueError) -> Exception:
        message = str(exc)
        if "n_ctx" in message or "context window" in message:
            return ModelError(
                f"The prompt and image of {self.model_path.name} do not fit in the context "
                f"(n_ctx={self.n_ctx}): {message}. Raise n_ctx in the captioning settings."
            )
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


def _llama_cpp_version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "unknown"))
