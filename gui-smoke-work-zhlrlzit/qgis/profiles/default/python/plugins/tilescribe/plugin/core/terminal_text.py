"""Text from an index (raster paths, captions: a stranger's file, or imported) made safe to print.

A terminal obeys escape sequences: ESC (C0), the one-byte CSI U+009B (C1), BEL, and
bidirectional overrides (U+202E) that reorder what is shown. `info`, `search` and the
exports printed them raw (issue 22). Text for a terminal gets every such character
(Unicode categories Cc and Cf, line and paragraph separators) as a visible escape
(`\\x1b`, `\\u202e`); JSON gets them as JSON escapes, so a program reading it still gets
the stored text back. Stored captions are cleaned on the way in as model answers are
(captioning.parse.clean_text).
"""

from __future__ import annotations

import json
import math
import unicodedata

_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}


def _unsafe(ch: str, keep: str) -> bool:
    return ch not in keep and unicodedata.category(ch) in _UNSAFE_CATEGORIES


def for_terminal(text, keep: str = "") -> str:
    """`text` with each control or format character (but those in `keep`) written as an escape."""
    text = str(text)
    if text.isprintable() and not any(_unsafe(ch, keep) for ch in text):
        return text
    out = []
    for ch in text:
        if not _unsafe(ch, keep):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def json_for_terminal(value, **dumps_options) -> str:
    """json.dumps(value), with every control or format character as a JSON escape (same data), and
    numbers that are not finite (a damaged tile box) as null: `Infinity` and `NaN` are not JSON."""
    try:
        text = json.dumps(value, allow_nan=False, **dumps_options)
    except ValueError:
        text = json.dumps(_finite_only(value), allow_nan=False, **dumps_options)
    if not any(_unsafe(ch, "\n") for ch in text):
        return text
    out = []
    for ch in text:
        if not _unsafe(ch, "\n"):  # json.dumps already escaped C0 inside strings; "\n" is indentation
            out.append(ch)
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:  # a UTF-16 surrogate pair, as JSON spells characters past the BMP
            code = ord(ch) - 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    return "".join(out)


def _finite_only(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value
