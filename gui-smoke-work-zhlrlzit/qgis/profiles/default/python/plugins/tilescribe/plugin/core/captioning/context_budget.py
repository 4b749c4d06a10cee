"""How a tile's prompt, image and answer share a llama.cpp context, decided before generating.

llama-cpp-python budgets the answer as n_ctx minus the text prompt when max_tokens is
None; the image's tokens are not in that sum, so a long answer decodes past the end of
the context and llama.cpp fails the whole call ("llama_decode returned 1"). Here the
answer gets an explicit budget, the context is sized (or checked) for prompt + image +
answer, and field lengths shrink when a small context cannot hold full-length answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

from ..errors import ModelError
from .gguf_header import GgufInfo

# A realistic caption variant, tokenized at load to learn how many tokens a character
# costs with this model's vocabulary (English BPE ~0.25; a byte-level toy vocab ~1).
SAMPLE_ANSWER = (
    '{"variants": [{"one_sentence": "A residential area with houses, gardens and a road '
    'along the northern edge.", "feature": "A straight road runs from west to east in the '
    'north; small houses with red roofs fill the centre; trees line the southern edge.", '
    '"caption": "Rows of detached houses with pitched roofs and small gardens cover most '
    'of the image, separated by narrow streets and scattered trees."}]}'
)
# Random or weak models pick longer-than-typical token sequences; the budget allows this
# much more than the sample's rate before an answer counts as cut off.
TOKEN_RATE_MARGIN = 1.5
JSON_CHARS_PER_VARIANT = 60  # keys, quotes, braces and commas around the three fields
MIN_FIELD_CHARS = 16  # below this a caption says nothing: refuse rather than shrink further
CONTEXT_STEP = 256  # an automatic n_ctx is rounded up to this
TEMPLATE_TOKENS = 64  # chat template and system message around the prompt, generously


@dataclass(frozen=True)
class ContextPlan:
    """The context size, the answer budget and the field bounds a captioner runs with."""

    n_ctx: int
    max_tokens: int  # the answer's budget when the prompt is as long as estimated
    max_len: dict  # per-field character bounds that fit the budget
    warnings: tuple[str, ...] = ()


def estimate_image_tokens(mmproj: GgufInfo, image_px: int) -> int:
    """Context positions one image of `image_px` (longer side) takes: an upper estimate.

    Fixed-grid projectors (LLaVA 1.5) take (image_size / patch_size)^2; LLaVA 1.6 adds one
    grid per tile of its largest pinpoint layout; Qwen2.5-VL one token per 28 px square;
    MiniCPM-V 64 per slice. The per-tile check at generation time uses the exact count.
    """
    fields = mmproj.fields
    kind = str(fields.get("clip.projector_type", ""))
    size = int(fields.get("clip.vision.image_size") or 336)
    patch = int(fields.get("clip.vision.patch_size") or 14)
    grid = (size // max(patch, 1)) ** 2
    if kind in ("qwen2vl_merger", "qwen2.5vl_merger"):
        side = math.ceil(max(image_px, 28) / 28)
        return side * side + 2
    if kind == "resampler":
        return 64 * 10  # MiniCPM-V: at most 9 slices and the overview, 64 queries each
    if kind in ("ldp", "ldpv2"):
        return grid // 4
    if kind == "gemma3":
        return 256
    if fields.get("clip.vision.mm_patch_merge_type") == "spatial_unpad":
        return grid * 5  # LLaVA 1.6: overview + up to 4 tiles (2,880 tokens at 336 px)
    return grid


def answer_chars(n_variants: int, max_len: Mapping[str, int]) -> int:
    """Characters of the longest answer the JSON schema allows."""
    return n_variants * (sum(max_len.values()) + JSON_CHARS_PER_VARIANT) + 20


def answer_tokens(n_variants: int, max_len: Mapping[str, int], tokens_per_char: float) -> int:
    """The answer budget: the longest schema-valid answer at this vocabulary's rate, with margin."""
    return math.ceil(answer_chars(n_variants, max_len) * tokens_per_char * TOKEN_RATE_MARGIN) + 16


def plan_context(
    *, n_variants: int, max_len: Mapping[str, int], tokens_per_char: float, prompt_tokens: int,
    image_tokens: int, requested_n_ctx: Optional[int], n_ctx_train: Optional[int], model_name: str,
) -> ContextPlan:
    """Pick (requested_n_ctx None) or check the context for prompt + image + answer.

    ModelError when even a minimal answer cannot fit, naming the n_ctx that would work.
    """
    fixed = prompt_tokens + TEMPLATE_TOKENS + image_tokens
    wanted = answer_tokens(n_variants, max_len, tokens_per_char)
    warnings: list[str] = []
    if requested_n_ctx is None:
        n_ctx = _round_up(fixed + wanted)
        if n_ctx_train and n_ctx > n_ctx_train:
            n_ctx = max(n_ctx_train, _round_up(fixed + _min_answer_tokens(n_variants, tokens_per_char)))
    else:
        n_ctx = int(requested_n_ctx)
    if n_ctx_train and n_ctx > n_ctx_train:
        warnings.append(
            f"n_ctx={n_ctx} is more than the {n_ctx_train} tokens {model_name} was trained on: its "
            f"answers may degrade past that length. Lower n_ctx to {n_ctx_train} or use a model "
            "trained on a longer context.")
    room = n_ctx - fixed
    least = _min_answer_tokens(n_variants, tokens_per_char)
    if room < least:
        raise ModelError(
            f"The context (n_ctx={n_ctx}) is too small for {model_name}: the prompt takes about "
            f"{prompt_tokens + TEMPLATE_TOKENS} tokens and the image about {image_tokens}, leaving "
            f"{max(room, 0)} for an answer that needs at least {least}. Set n_ctx to "
            f"{_round_up(fixed + wanted)} or more (or leave it on auto), or ask for fewer variants.")
    bounds = dict(max_len)
    if room < wanted:
        bounds = _shrink(max_len, n_variants, tokens_per_char, room)
        warnings.append(
            f"n_ctx={n_ctx} leaves room for answers of about {room} tokens, so caption fields are "
            f"limited to {bounds['one_sentence']}/{bounds['feature']}/{bounds['caption']} characters. "
            f"Set n_ctx to {_round_up(fixed + wanted)} for full-length captions.")
    return ContextPlan(n_ctx, min(room, answer_tokens(n_variants, bounds, tokens_per_char)), bounds,
                       tuple(warnings))


def _min_answer_tokens(n_variants: int, tokens_per_char: float) -> int:
    floor = {"one_sentence": MIN_FIELD_CHARS, "feature": MIN_FIELD_CHARS, "caption": MIN_FIELD_CHARS}
    return answer_tokens(n_variants, floor, tokens_per_char)


def _shrink(max_len: Mapping[str, int], n_variants: int, tokens_per_char: float, room: int) -> dict:
    """Field bounds scaled down together until the longest answer fits in `room` tokens."""
    scale = 1.0
    bounds = dict(max_len)
    while scale > 0.01:
        bounds = {k: max(MIN_FIELD_CHARS, int(v * scale)) for k, v in max_len.items()}
        if answer_tokens(n_variants, bounds, tokens_per_char) <= room:
            return bounds
        scale *= 0.9
    return bounds


def _round_up(tokens: int) -> int:
    return int(math.ceil(tokens / CONTEXT_STEP) * CONTEXT_STEP)
