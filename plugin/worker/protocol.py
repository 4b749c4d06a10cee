"""The worker's request fields and their types: a request that breaks them is a ProtocolError naming the field.

Without these checks `"k": "ten"` reached the search and came back as an InternalError
holding a Python repr; a client (the QGIS side, or a script) needs to know which field
to fix.
"""

from __future__ import annotations

import os
from typing import Optional

from ..core.captioning.factory import CaptionerSettings
from ..core.index.target import is_server_index
from ..core.errors import ProtocolError  # in errors.py, so the QGIS side can raise it as its class too
from ..core.indexing.index_settings import IndexSettings
from ..core.search.search import SearchRequest
from .request_fields import Check, field_checks, index_bands, number, text, whole


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


# `dbs` of a project search: absolute paths only, or PostgreSQL indexes (a URL or a libpq service,
# which name no folder). The worker's working folder is QGIS's, not the client's: "" or "x.sqlite"
# searched whatever sat there (issue 22). Bounded like any field.
MAX_DBS = 10_000


def _texts(value) -> Optional[str]:
    ok = (isinstance(value, list) and 0 < len(value) <= MAX_DBS
          and all(isinstance(v, str) and (os.path.isabs(v) or is_server_index(v)) for v in value))
    return None if ok else (f"a non-empty list of absolute index file paths or PostgreSQL indexes "
                            f"(at most {MAX_DBS})")


def _captioner(value) -> Optional[str]:
    return None if isinstance(value, dict) else "an object"


# The captioner object of `index`: every CaptionerSettings field, bounded where the dataclass
# declares it (as the command line bounds it), so a client cannot ask for a million parallel
# requests or an infinite temperature (issue 22).
CAPTIONER_FIELDS: dict[str, Check] = {name: check for name, (_, check) in field_checks(CaptionerSettings).items()}
_INDEX_SETTINGS = field_checks(IndexSettings, only=("tile_size", "overlap", "variants", "retry_failed"))
_NOT_REQUIRED = {name: (False, check) for name, (_, check) in _INDEX_SETTINGS.items()}

# Per command: field -> (required, check). Optional fields may also be null. The fields of the
# request objects come from their dataclasses (request_fields.py); the rest are the worker's own.
FIELDS: dict[str, dict[str, tuple[bool, Check]]] = {
    "hello": {}, "cancel": {"target": (True, _request_id)},
    "info": {"db": (True, text)}, "runs": {"db": (True, text)},
    # "search": `db` (one index, as before) or `dbs` (several files or folders: one merged ranking).
    "search": {"db": (False, text), "dbs": (False, _texts), "extent_crs": (False, text),
               "other_embedders": (False, text), "embedder": (False, text),
               **field_checks(SearchRequest, exclude=("exclude_tiles",))},
    "similar": {"db": (True, text), "tile_db_id": (True, whole), "k": (False, whole)},
    "tile_at": {"db": (True, text), "x": (True, number), "y": (True, number), "run_id": (False, whole)},
    "captions": {"db": (True, text), "tile_db_id": (True, whole)},
    "import_captions": {"db": (True, text), "raster": (True, text), "captions": (True, text),
                        **field_checks(IndexSettings, only=("tile_size", "overlap")), "embedder": (False, text)},
    "index": {"db": (True, text), "raster": (True, text), **_NOT_REQUIRED, "bands": (False, index_bands),
              "captioner": (False, _captioner), "embedder": (False, text)},
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
    tile_size = request.get("tile_size") or IndexSettings.tile_size
    overlap = request.get("overlap") or 0
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
