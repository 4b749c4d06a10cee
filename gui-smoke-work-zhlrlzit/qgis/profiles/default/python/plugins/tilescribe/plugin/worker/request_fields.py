"""The worker's field checks, derived from the request dataclasses the core runs on.

A request's fields, their types and their limits are written once, in the dataclass
(IndexSettings, CaptionerSettings, SearchRequest) with `core.bounds.bounded` limits; this
turns each field into a check that names what it expects. The type comes from the
annotation (`int`, `Optional[float]`, ...), the limits from the field's bounds.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Callable, Iterable, Optional

from ..core.bounds import Bounds, bounds_of

Check = Callable[[object], Optional[str]]


def finite(value) -> bool:
    """A JSON number a float can hold: an integer of 400 digits raised OverflowError in isfinite (issue 22)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def text(value) -> Optional[str]:
    return None if isinstance(value, str) else "text"


def whole(value) -> Optional[str]:
    return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"


def number(value) -> Optional[str]:
    return None if finite(value) else "a finite number"


def flag(value) -> Optional[str]:
    return None if isinstance(value, bool) else "true or false"


def between(low, high, is_whole=True) -> Check:
    """A number in [low, high]; whole numbers only unless `is_whole` is False."""
    def check(value) -> Optional[str]:
        kind = "a whole number" if is_whole else "a number"
        ok = finite(value) and (not is_whole or isinstance(value, int)) and low <= value <= high
        return None if ok else f"{kind} from {low} to {high}"
    return check


def above(low, high) -> Check:
    def check(value) -> Optional[str]:
        ok = finite(value) and low < value <= high
        return None if ok else f"a number above {low} and at most {high}"
    return check


def one_of(choices) -> Check:
    def check(value) -> Optional[str]:
        return None if isinstance(value, str) and value in choices else f"one of {', '.join(choices)}"
    return check


def urls(value) -> Optional[str]:
    ok = isinstance(value, str) or (isinstance(value, list) and 0 < len(value) <= 64
                                    and all(isinstance(v, str) for v in value))
    return None if ok else "a URL, or a list of up to 64 URLs"


def extent(value) -> Optional[str]:
    ok = isinstance(value, list) and len(value) == 4 and all(number(v) is None for v in value)
    return None if ok else "a list of four finite numbers [minx, miny, maxx, maxy]"


def index_bands(value) -> Optional[str]:
    ok = (isinstance(value, list) and len(value) in (1, 3)
          and all(between(1, 65535)(v) is None for v in value))
    return None if ok else "a list of 1 band (grey) or 3 bands (red, green, blue), each a number from 1 to 65535"


SHAPES = {"urls": urls, "extent": extent, "bands": index_bands}
_TYPES = {"int": whole, "float": number, "bool": flag, "str": text}


def check_of(annotation: str, bounds: Bounds) -> Check:
    """The check for one field: its shape, else its limits, else its type."""
    if bounds.kind:
        return SHAPES[bounds.kind]
    if bounds.choices is not None:
        return one_of(bounds.choices)
    base = annotation.replace("Optional[", "").rstrip("]").strip()
    is_whole = base == "int"
    if bounds.above is not None:
        return above(bounds.above, bounds.high)
    if bounds.low is not None and bounds.high is not None:
        return between(bounds.low, bounds.high, is_whole)
    if base not in _TYPES:
        raise TypeError(f"no protocol check for a field of type {annotation!r}: give it bounds(kind=...)")
    return _TYPES[base]


def field_checks(cls, *, only: Optional[Iterable[str]] = None, exclude: Iterable[str] = ()) -> dict:
    """{name: (required, check)} for a dataclass's fields; a field without a default is required."""
    chosen = None if only is None else set(only)
    checks = {}
    for f in fields(cls):
        if f.name in exclude or (chosen is not None and f.name not in chosen):
            continue
        required = f.default is MISSING and f.default_factory is MISSING
        checks[f.name] = (required, check_of(str(f.type), bounds_of(f)))
    return checks


def build(cls, request: dict, *, exclude: Iterable[str] = ()):
    """The dataclass from a checked request: the fields it gives (null or absent: the default);
    JSON lists become tuples, as the frozen request objects hold them."""
    values = {}
    for f in fields(cls):
        value = request.get(f.name)
        if f.name not in exclude and value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)
