"""Lenient parsing of a model's answer into validated caption variants."""

from __future__ import annotations

import json
import re
import unicodedata

from ..captions import FIELDS, CaptionVariant
from ..errors import CaptionError

# strict=False lets raw control characters through inside strings: tiny or
# quantised models emit byte tokens there (RECIPES.md); clean_text removes them.
class _Decoder(json.JSONDecoder):
    """A decoder for which JSON nested too deeply is malformed JSON, not a RecursionError."""

    def raw_decode(self, s, idx=0):
        try:
            return super().raw_decode(s, idx)
        except RecursionError:
            raise json.JSONDecodeError("JSON nested too deeply", s, len(s)) from None


_DECODER = _Decoder(strict=False)
# Real answers are a few thousand characters (the schema bounds every field); decoding
# time grows with the square of the length, so a runaway answer is cut here.
MAX_ANSWER_CHARS = 100_000
_VARIANTS_ARRAY = re.compile(r'"variants"\s*:\s*\[')
_SNIPPET = 120


def clean_text(value: str) -> str:
    """The text without control, format, private-use, unassigned or surrogate characters
    (Unicode category C*) nor U+FFFD, with whitespace collapsed.

    Models that write byte tokens produce all of these; a lone surrogate would
    even make the text impossible to encode as UTF-8 when it is stored.
    """
    kept = "".join(" " if _is_junk(ch) else ch for ch in value)
    return " ".join(kept.split())


def _is_junk(ch: str) -> bool:
    return ch == "\ufffd" or unicodedata.category(ch)[0] == "C"


def parse_variants(raw: str, n_variants: int, max_chars: int = MAX_ANSWER_CHARS) -> list[CaptionVariant]:
    """Exactly `n_variants` distinct, complete variants from a model answer.

    Accepts code fences, prose around the JSON, a bare list instead of
    {"variants": [...]}, trailing garbage and answers cut off mid-way (the
    complete items are kept). Extra valid variants beyond `n_variants` are
    dropped. Raises CaptionError saying what was wrong otherwise. `max_chars`: where a
    runaway answer is cut; a backend that asks for many long variants passes more.
    """
    if not raw or not raw.strip():
        raise CaptionError("the model's answer was empty")
    raw = raw[:max_chars]
    items, salvaged = _find_items(raw)
    if items is None:
        raise CaptionError(_why_no_items(raw))
    variants, problems = _valid_variants(items)
    if len(variants) >= n_variants:
        return variants[:n_variants]
    reason = f"expected {n_variants} caption variants, got {len(variants)} valid"
    if problems:
        reason += " (" + "; ".join(problems[:4]) + ")"
    if salvaged:
        reason += "; the JSON was cut off or malformed, only complete items were kept"
    raise CaptionError(reason)


def _why_no_items(raw: str) -> str:
    start = raw.find("{")
    if start < 0:
        return f"the model's answer holds no JSON caption variants: {_snippet(raw)}"
    try:
        _DECODER.raw_decode(raw, start)
    except json.JSONDecodeError:
        return (
            "the JSON in the model's answer is cut off or malformed, with no complete variant "
            f"in it (raise n_ctx or lower the length limits): {_snippet(raw)}"
        )
    return f'the model\'s JSON has no {{"variants": [...]}} list: {_snippet(raw)}'


def _find_items(raw: str) -> tuple[list | None, bool]:
    """The list of candidate items, and whether it had to be salvaged item by item."""
    items = _decode_whole(raw)
    if items is not None:
        return items, False
    match = _VARIANTS_ARRAY.search(raw)
    start = match.end() if match else raw.find("[") + 1
    items = _scan_objects(raw, start)
    return (items, True) if items else (None, True)


def _decode_whole(text: str) -> list | None:
    """Items of the first JSON value that decodes, ignoring text before and after it."""
    broken_until = -1
    for match in re.finditer(r"[{\[]", text):
        start = match.start()
        if start < broken_until:
            # Inside a value that failed to decode (say, the first item of a
            # cut-off list): decoding it alone would hide the other items.
            continue
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as err:
            broken_until = err.pos
            continue
        items = _items_of(value)
        if items is not None:
            return items
    return None


def _items_of(value) -> list | None:
    """The variant items inside a decoded value, or None when it holds none."""
    if isinstance(value, list):
        # A bare list; "[1]" or "[see above]" in prose around the JSON is not one.
        return value if any(isinstance(v, dict) for v in value) else None
    if not isinstance(value, dict):
        return None
    keys = {_norm_key(k): v for k, v in value.items()}
    if isinstance(keys.get("variants"), list):
        return keys["variants"]
    if any(name in keys for name in FIELDS):
        return [value]  # a single variant without its wrapper
    # Some models rename the wrapper ("captions", "descriptions"): take its list.
    lists = [v for v in value.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    return lists[0] if len(lists) == 1 else None


def _scan_objects(text: str, start: int) -> list[dict]:
    """Every complete JSON object from `start` on that looks like a variant."""
    found = []
    pos = text.find("{", max(start, 0))
    while pos >= 0:
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            end = pos + 1  # a cut-off or broken item: look for the next one
        else:
            if isinstance(value, dict) and any(_norm_key(k) in FIELDS for k in value):
                found.append(value)
        pos = text.find("{", end)
    return found


def _valid_variants(items: list) -> tuple[list[CaptionVariant], list[str]]:
    """Complete, distinct variants in order, and a reason for each item left out."""
    variants: list[CaptionVariant] = []
    seen: dict[tuple, int] = {}
    problems: list[str] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problems.append(f"item {number} is not an object")
            continue
        variant = _variant_of(item)
        empty = [name for name in FIELDS if not getattr(variant, name)]
        if empty:
            problems.append(f"variant {number} has an empty {', '.join(repr(e) for e in empty)}")
            continue
        key = tuple(getattr(variant, name).casefold() for name in FIELDS)
        if key in seen:
            problems.append(f"variant {number} repeats variant {seen[key]}")
            continue
        seen[key] = number
        variants.append(variant)
    return variants, problems


def _variant_of(item: dict) -> CaptionVariant:
    fields = {_norm_key(k): v for k, v in item.items()}
    return CaptionVariant(**{name: clean_text(_as_text(fields.get(name))) for name in FIELDS})


def _as_text(value) -> str:
    """A field as text; a list of phrases (models do that for `feature`) is joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(v.strip() for v in value if v.strip())
    return ""


def _norm_key(key) -> str:
    return re.sub(r"[\s\-]+", "_", str(key).strip().lower())


def _snippet(raw: str) -> str:
    text = clean_text(raw)
    return repr(text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else ""))
