"""A setting's limits, declared once beside its default (dataclass field metadata).

The worker's protocol derives its field checks from these declarations
(plugin/worker/request_fields.py), so a request object's fields, their types and their limits
are written in one place: the dataclass the core itself runs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

KEY = "tilescribe.bounds"


@dataclass(frozen=True)
class Bounds:
    low: Optional[float] = None      # inclusive
    high: Optional[float] = None     # inclusive
    above: Optional[float] = None    # exclusive lower limit (a timeout above 0)
    kind: Optional[str] = None       # a value's shape beyond its type: "urls", "extent", "bands"
    choices: Optional[tuple] = None  # the only values taken (a text field naming a mode)


def bounded(default: Any, low=None, high=None, *, above=None, kind=None, choices=None):
    """A dataclass field with this default and these limits."""
    return field(default=default, metadata={KEY: Bounds(low, high, above, kind,
                                                        tuple(choices) if choices is not None else None)})


def bounds_of(dataclass_field) -> Bounds:
    return dataclass_field.metadata.get(KEY) or Bounds()
