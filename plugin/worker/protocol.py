"""The worker's request fields and their types: a request that breaks them is a ProtocolError naming the field.

Without these checks `"k": "ten"` reached the search and came back as an InternalError
holding a Python repr; a client (the QGIS side, or a script) needs to know which field
to fix.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from ..core.errors import ProtocolError  # in errors.py, so the QGIS side can raise it as its class too


def _text(value) -> Optional[str]:
    return None if isinstance(value, str) else "text"


def _whole(value) -> Optional[str]:
    return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"


def _number(value) -> Optional[str]:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return None if ok else "a finite number"


def _extent(value) -> Optional[str]:
    ok = isinstance(value, list) and len(value) == 4 and all(_number(v) is None for v in value)
    return None if ok else "a list of four finite numbers [minx, miny, maxx, maxy]"


def _bands(value) -> Optional[str]:
    ok = isinstance(value, list) and all(_whole(v) is None for v in value)
    return None if ok else "a list of whole band numbers"


def _texts(value) -> Optional[str]:
    ok = isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
    return None if ok else "a non-empty list of index file paths"


def _flag(value) -> Optional[str]:
    return None if isinstance(value, bool) else "true or false"


def _any(value) -> Optional[str]:
    return None


def _object(value) -> Optional[str]:
    return None if isinstance(value, dict) else "an object"


Check = Callable[[object], Optional[str]]
# Per command: field -> (required, check). Optional fields may also be null.
FIELDS: dict[str, dict[str, tuple[bool, Check]]] = {
    "hello": {}, "cancel": {"target": (True, _any)},
    "info": {"db": (True, _text)}, "runs": {"db": (True, _text)},
    # "search": `db` (one index, as before) or `dbs` (several files or folders: one merged ranking).
    "search": {"db": (False, _text), "dbs": (False, _texts), "extent_crs": (False, _text),
               "other_embedders": (False, _text), "query": (True, _text), "k": (False, _whole),
               "run_id": (False, _whole),
               "extent": (False, _extent), "mode": (False, _text), "embedder": (False, _text),
               "lexical": (False, _flag)},
    "similar": {"db": (True, _text), "tile_db_id": (True, _whole), "k": (False, _whole)},
    "tile_at": {"db": (True, _text), "x": (True, _number), "y": (True, _number), "run_id": (False, _whole)},
    "captions": {"db": (True, _text), "tile_db_id": (True, _whole)},
    "import_captions": {"db": (True, _text), "raster": (True, _text), "captions": (True, _text),
                        "tile_size": (False, _whole), "overlap": (False, _whole), "embedder": (False, _text)},
    "index": {"db": (True, _text), "raster": (True, _text), "tile_size": (False, _whole),
              "overlap": (False, _whole), "variants": (False, _whole), "bands": (False, _bands),
              "captioner": (False, _object), "embedder": (False, _text),
              "retry_failed": (False, _flag)},
}


def check_request(request: dict, commands) -> None:
    """Raise a ProtocolError for a command not in `commands`, or naming a missing or wrongly typed field.

    A command without an entry in FIELDS has its fields unchecked (add one when adding a command).
    """
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or cmd not in commands:
        raise ProtocolError(f"unknown command {cmd!r}: use one of {', '.join(sorted(commands))} (or shutdown)")
    fields = FIELDS.get(cmd)
    unknown = sorted(set(request) - {"id", "cmd", *(fields or ())}) if fields is not None else []
    if unknown:  # a typo, or a client newer than this worker: say so instead of ignoring it
        raise ProtocolError(f"{cmd}: unknown field {unknown[0]!r}; known: {', '.join(fields) or 'none'}")
    for name, (required, check) in (fields or {}).items():
        value = request.get(name)
        if value is None:
            if required:
                raise ProtocolError(f"{cmd}: field {name!r} is missing")
            continue
        expected = check(value)
        if expected:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ProtocolError(f"{cmd}: field {name!r} must be {expected} (got {shown})")
