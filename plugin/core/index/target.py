"""What `--db` names: an index file, or a PostgreSQL index (a URL or a libpq service), told apart here.

No database driver is imported: the QGIS side and the SQLite path read this without psycopg.

PostgreSQL forms (docs/postgres.md):
  postgresql://[user@]host[:port]/database[?schema=NAME&lease=SECONDS&sslmode=...]  (also postgres://)
  service=NAME [schema=NAME] [lease=SECONDS] [other libpq keywords]   (a libpq service, pg_service.conf)
`schema` (default tilescribe) and `lease` are TileScribe's; every other parameter goes to libpq as given
(sslmode, sslrootcert, connect_timeout...). A password is never shown: `label` drops it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

DEFAULT_SCHEMA = "tilescribe"
# How long an indexer's claim on a tile lasts without news from it (its heartbeat renews it
# every lease/3 while it lives): a machine that dies gives its tiles back after this long.
DEFAULT_LEASE_S = 600.0
_OURS = ("schema", "lease")
_URL_SCHEMES = ("postgresql://", "postgres://")
# libpq's keyword=value form: a value is a word or a single-quoted string with \-escapes.
_KEYWORD = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
_SECRET_KEYS = ("password",)


def is_server_index(db) -> bool:
    """Whether `--db` names a PostgreSQL index rather than a file."""
    text = str(db).strip()
    return text.lower().startswith(_URL_SCHEMES) or bool(re.match(r"service\s*=", text))


@dataclass(frozen=True)
class ServerTarget:
    conninfo: str  # for libpq: the URL or keywords without TileScribe's own parameters
    schema: str
    lease_s: float
    label: str  # what messages show: no password
    password: Optional[str]  # only to scrub it from a server's error text; never shown or stored


def parse_target(db: str) -> ServerTarget:
    """Split `--db` into libpq's part and TileScribe's (schema, lease); ValueError names a bad value."""
    text = str(db).strip()
    if text.lower().startswith(_URL_SCHEMES):
        parts = urlsplit(text)
        params = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in params if k in _OURS}
        rest = [(k, v) for k, v in params if k not in _OURS]
        conninfo = urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote)))
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0] + "@" if len(netloc) == 2 else ""
        shown = [(k, v) for k, v in rest if k not in _SECRET_KEYS] + sorted(ours.items())
        label = urlunsplit(parts._replace(netloc=user + netloc[-1], query=urlencode(shown, safe="/")))
        password = unquote(parts.password or "") or dict(rest).get("password")
    else:
        pairs = [(m[1], m[2]) for m in _KEYWORD.finditer(text)]
        if not pairs or "".join(m[0] for m in _KEYWORD.finditer(text)).strip() != text:
            raise ValueError(f"{_scrub(text)!r} is not libpq keyword=value pairs (e.g. service=team schema=ortho)")
        ours = {k: _unquote(v) for k, v in pairs if k in _OURS}
        rest = [(k, v) for k, v in pairs if k not in _OURS]
        conninfo = " ".join(f"{k}={v}" for k, v in rest)
        label = " ".join(f"{k}={v}" for k, v in rest + sorted(ours.items()) if k not in _SECRET_KEYS)
        password = next((_unquote(v) for k, v in rest if k == "password"), None)
    schema = ours.get("schema") or DEFAULT_SCHEMA
    if len(schema.encode()) > 63 or "\x00" in schema:
        raise ValueError(f"schema {schema!r} is not a PostgreSQL name (at most 63 bytes)")
    try:
        lease = float(ours.get("lease", DEFAULT_LEASE_S))
    except ValueError:
        lease = -1.0
    if not 0 < lease < 7 * 86400:
        raise ValueError(f"lease={ours.get('lease')!r} must be a number of seconds above 0 "
                         f"(default {DEFAULT_LEASE_S:g})")
    return ServerTarget(conninfo, schema, lease, label, password or os.environ.get("PGPASSWORD") or None)


def index_label(db) -> str:
    """How to name an index in messages: the file path, or a PostgreSQL target without its password."""
    if not is_server_index(db):
        return str(db)
    try:
        return parse_target(str(db)).label
    except ValueError:
        return _scrub(str(db))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _scrub(text: str) -> str:
    """Text that may hold a password (a URL's user:password@, password=...) with it removed."""
    text = re.sub(r"(://[^/:@\s]*):[^@/\s]*@", r"\1@", text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)
