"""The captioning prompt and the JSON schema that constrains a model's answer (PAPER.md)."""

from __future__ import annotations

from typing import Mapping

from ..captions import FIELDS

# Stored with every run: captions written under another prompt are not comparable.
PROMPT_VERSION = "tilescribe-caption-v1"

# Upper bounds in characters. A real VLM writes well inside them; a weak model
# under a grammar would otherwise fill a string until max_tokens (RECIPES.md).
DEFAULT_MAX_LEN: Mapping[str, int] = {"one_sentence": 200, "feature": 400, "caption": 800}

_FIELD_RULES = {
    "one_sentence": "one line that says what the image shows overall first, then its main details",
    "feature": "the visible features, each with its direction and position in the image "
    "(for example 'a river runs from the north-west corner to the south-east')",
    "caption": "a detailed paragraph describing the whole scene",
}


def build_prompt(n_variants: int) -> str:
    """The instruction sent with each tile image, asking for exactly `n_variants` variants."""
    n = _check_n(n_variants)
    fields = "\n".join(f'- "{name}": {_FIELD_RULES[name]}' for name in FIELDS)
    example = ", ".join(f'"{name}": "..."' for name in FIELDS)
    return (
        "You are looking at one tile of an overhead (aerial or satellite) image.\n"
        f"Write {n} different descriptions of it.\n"
        "Rules:\n"
        "- Describe only what is visible in the image; do not guess what is outside it.\n"
        "- Orientation: the top of the image is North, the bottom is South, "
        "the left is West and the right is East.\n"
        "- Use qualitative size words (small, large, a few, many, most of the image); "
        "never give exact counts or percentages that cannot be seen.\n"
        f"- The {n} descriptions must differ from each other in wording and emphasis.\n"
        "Each description has three non-empty fields:\n"
        f"{fields}\n"
        f'Answer with strict JSON only: an object {{"variants": [...]}} whose array has '
        f"exactly {n} items, each like {{{example}}}. No text before or after the JSON."
    )


# Chat families whose template must see the image before any text (the projector's
# tokens are spliced where the template expects them); the others get the
# instructions first, so a server's prompt cache reuses them from tile to tile.
IMAGE_FIRST_FAMILIES = frozenset({"moondream", "minicpm-v-2.6"})


def build_messages(image_uri: str, n_variants: int, family: str | None = None) -> list[dict]:
    """The chat message for one tile: the fixed instructions, then the image.

    The instructions are identical for every tile, so putting them first lets
    llama.cpp reuse their tokens (prefix cache) instead of re-reading them per tile.
    """
    text = {"type": "text", "text": build_prompt(n_variants)}
    image = {"type": "image_url", "image_url": {"url": image_uri}}
    parts = [image, text] if family in IMAGE_FIRST_FAMILIES else [text, image]
    return [{"role": "user", "content": parts}]


def response_schema(
    n_variants: int, max_len: int | Mapping[str, int] | None = None
) -> dict:
    """JSON schema of an answer: {"variants": [N items of bounded, non-empty strings]}.

    `max_len` bounds every field (an int) or each field by name (a mapping);
    None uses DEFAULT_MAX_LEN.
    """
    n = _check_n(n_variants)
    bounds = field_max_len(max_len)
    item = {
        "type": "object",
        "properties": {
            name: {"type": "string", "minLength": 1, "maxLength": bounds[name]}
            for name in FIELDS
        },
        "required": list(FIELDS),
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "variants": {"type": "array", "items": item, "minItems": n, "maxItems": n}
        },
        "required": ["variants"],
        "additionalProperties": False,
    }


def field_max_len(max_len: int | Mapping[str, int] | None = None) -> dict[str, int]:
    """Per-field character bounds from an int, a partial mapping or None (the defaults)."""
    if max_len is None:
        bounds = dict(DEFAULT_MAX_LEN)
    elif isinstance(max_len, int):
        bounds = {name: max_len for name in FIELDS}
    else:
        unknown = set(max_len) - set(FIELDS)
        if unknown:
            raise ValueError(f"max_len names unknown fields {sorted(unknown)}; use {FIELDS}")
        bounds = {**DEFAULT_MAX_LEN, **max_len}
    for name, bound in bounds.items():
        if not isinstance(bound, int) or bound < 1:
            raise ValueError(f"max_len for {name} must be a positive integer, not {bound!r}")
    return bounds


def _check_n(n_variants: int) -> int:
    if not isinstance(n_variants, int) or isinstance(n_variants, bool) or n_variants < 1:
        raise ValueError(f"n_variants must be a positive integer, not {n_variants!r}")
    return n_variants
