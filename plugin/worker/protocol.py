"""The worker's request fields and their types: a request that breaks them is a ProtocolError naming the field.

Without these checks `"k": "ten"` reached the search and came back as an InternalError
holding a Python repr; a client (the QGIS side, or a script) needs to know which field
to fix.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from ..core.errors import ProtocolError  # in errors.py, so the QGIS side can raise it as its class too
from ..core.indexing.index_settings import MAX_VARIANTS

Check = Callable[[object], Optional[str]]


def _text(value) -> Optional[str]:
    return None if isinstance(value, str) else "text"


def _whole(value) -> Optional[str]:
    return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"


def _number(value) -> Optional[str]:
    return None if _finite(value) else "a finite number"


def _finite(value) -> bool:
    """A JSON number a float can hold: an integer of 400 digits raised OverflowError in isfinite (issue 22)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# Request ids travel back in every reply and key the job table: text, a whole number a
# double holds exactly (JavaScript clients too), or null. A list id made the job table
# raise TypeError and ended the worker; 1e400 came back as `Infinity`, not JSON (issue 22).
MAX_ID_TEXT = 200
MAX_ID_NUMBER = 2 ** 53


def _request_id(value) -> Optional[str]:
    if value is None or (isinstance(value, str) and len(value) <= MAX_ID_TEXT):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_ID_NUMBER:
        return None
    return f"text (at most {MAX_ID_TEXT} characters), a whole number (at most 2**53) or null"


def _between(low, high, whole=True) -> Check:
    """A number in [low, high]; whole numbers only unless `whole` is False."""
    def check(value) -> Optional[str]:
        kind = "a whole number" if whole else "a number"
        ok = _finite(value) and (not whole or isinstance(value, int)) and low <= value <= high
        return None if ok else f"{kind} from {low} to {high}"
    return check


def _above(low, high) -> Check:
    def check(value) -> Optional[str]:
        ok = _finite(value) and low < value <= high
        return None if ok else f"a number above {low} and at most {high}"
    return check


def _index_bands(value) -> Optional[str]:
    ok = (isinstance(value, list) and len(value) in (1, 3)
          and all(_between(1, 65535)(v) is None for v in value))
    return None if ok else "a list of 1 band (grey) or 3 bands (red, green, blue), each a number from 1 to 65535"


def _server_url(value) -> Optional[str]:
    ok = isinstance(value, str) or (isinstance(value, list) and 0 < len(value) <= 64
                                    and all(isinstance(v, str) for v in value))
    return None if ok else "a URL, or a list of up to 64 URLs"


def _extent(value) -> Optional[str]:
    ok = isinstance(value, list) and len(value) == 4 and all(_number(v) is None for v in value)
    return None if ok else "a list of four finite numbers [minx, miny, maxx, maxy]"


def _bands(value) -> Optional[str]:
    ok = isinstance(value, list) and all(_whole(v) is None for v in value)
    return None if ok else "a list of whole band numbers"


def _flag(value) -> Optional[str]:
    return None if isinstance(value, bool) else "true or false"


_MAX_VARIANTS = MAX_VARIANTS
_MAX_TILE = 4096  # tiling.MAX_TILE_SIZE (tiling needs rasterio; a test keeps the two equal)

# The captioner object of `index` (captioning.factory.CaptionerSettings): each field bounded as
# the command line bounds it (positive_int for counts, --timeout above 0), so a worker client
# cannot ask for a million parallel requests or an infinite temperature (issue 22).
CAPTIONER_FIELDS: dict[str, Check] = {
    "model": _text, "mmproj": _text, "family": _text, "server_url": _server_url, "server_model": _text,
    "api_key_env": _text, "parallel_requests": _between(1, 256), "timeout_s": _above(0, 86400),
    "n_threads": _between(1, 1024), "n_ctx": _between(1, 1 << 22), "n_gpu_layers": _between(-1, 100000),
    "engine": _text, "slots": _between(1, 256), "llama_server": _text, "seed": _between(0, 2 ** 32 - 1),
    "temperature": _between(0, 2, whole=False), "test_model": _flag,
}


def _captioner(value) -> Optional[str]:
    return None if isinstance(value, dict) else "an object"


# Per command: field -> (required, check). Optional fields may also be null.
FIELDS: dict[str, dict[str, tuple[bool, Check]]] = {
    "hello": {}, "cancel": {"target": (True, _request_id)},
    "info": {"db": (True, _text)}, "runs": {"db": (True, _text)},
    "search": {"db": (True, _text), "query": (True, _text), "k": (False, _whole), "run_id": (False, _whole),
               "extent": (False, _extent), "mode": (False, _text), "embedder": (False, _text),
               "lexical": (False, _flag)},
    "similar": {"db": (True, _text), "tile_db_id": (True, _whole), "k": (False, _whole)},
    "tile_at": {"db": (True, _text), "x": (True, _number), "y": (True, _number), "run_id": (False, _whole)},
    "captions": {"db": (True, _text), "tile_db_id": (True, _whole)},
    "index": {"db": (True, _text), "raster": (True, _text), "tile_size": (False, _between(16, _MAX_TILE)),
              "overlap": (False, _between(0, _MAX_TILE - 1)), "variants": (False, _between(1, _MAX_VARIANTS)),
              "bands": (False, _index_bands), "captioner": (False, _captioner), "embedder": (False, _text),
              "retry_failed": (False, _flag)},
}


def check_request(request: dict, commands) -> None:
    """Raise a ProtocolError for a command not in `commands`, or naming a missing or wrongly typed field.

    A command without an entry in FIELDS has its fields unchecked (add one when adding a command).
    """
    expected = _request_id(request.get("id"))
    if expected:
        raise ProtocolError(f"the request id must be {expected} (got {_shown(request.get('id'))})")
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
            raise ProtocolError(f"{cmd}: field {name!r} must be {expected} (got {_shown(value)})")
    if cmd == "index":
        _check_index(request)


def _check_index(request: dict) -> None:
    tile_size, overlap = request.get("tile_size") or 512, request.get("overlap") or 0
    if overlap >= tile_size:
        raise ProtocolError(f"index: field 'overlap' must be smaller than the tile size {tile_size} "
                            f"(got {overlap})")
    captioner = request.get("captioner") or {}
    unknown = sorted(set(captioner) - set(CAPTIONER_FIELDS))
    if unknown:
        raise ProtocolError(f"index: captioner: unknown field {unknown[0]!r}; known: {', '.join(CAPTIONER_FIELDS)}")
    for name, check in CAPTIONER_FIELDS.items():
        value = captioner.get(name)
        expected = None if value is None else check(value)
        if expected:
            raise ProtocolError(f"index: field 'captioner.{name}' must be {expected} (got {_shown(value)})")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
