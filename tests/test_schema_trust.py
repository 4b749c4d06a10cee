"""Issue 22: an index file's recorded schema is checked before anything is written to it."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from helpers import in_process_cli
from tilescribe.plugin.core.index import connection as store_module, migrations
from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.store import Store


@pytest.fixture
def index(two_tile_index):
    return two_tile_index


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("version", [-1, -5, -(2 ** 31)])
def test_a_negative_schema_version_is_refused_before_anything_is_written(index, version, monkeypatch, capsys,
                                                                          hashing_embedder):
    with sqlite3.connect(index) as conn:
        conn.execute(f"pragma user_version = {version}")
    conn.close()
    before = _digest(index)
    cli = in_process_cli(monkeypatch, capsys, hashing_embedder)
    for argv in (("search", "harbour", "--db", index), ("info", "--db", index), ("check", "--db", index)):
        code, out, err = cli(*argv)
        assert code == 2, (argv, err)
        assert "Traceback" not in err
        assert f"Index {index} records schema version {version}, which no TileScribe writes" in err, err
        assert _digest(index) == before  # nothing migrated, nothing committed
    with sqlite3.connect(index) as conn:
        assert conn.execute("pragma user_version").fetchone()[0] == version
        assert conn.execute("select count(*) from captions").fetchone()[0] == 2
    conn.close()


def test_a_migration_that_fails_half_way_leaves_the_file_as_it_was(index, monkeypatch):
    """All steps in one transaction: a failure at the second step keeps the first one's work out."""
    latest = migrations.SCHEMA_VERSION
    with sqlite3.connect(index) as conn:
        conn.execute(f"pragma user_version = {latest - 2}")
    conn.close()

    def first(conn):
        conn.execute("create table marker (x)")

    def second(conn):
        raise sqlite3.OperationalError("no such column: foo")

    patched = list(migrations.MIGRATIONS)
    patched[latest - 2], patched[latest - 1] = first, second
    monkeypatch.setattr(store_module, "MIGRATIONS", patched)
    with pytest.raises(IndexFileError):
        Store(index)
    with sqlite3.connect(index) as conn:
        assert conn.execute("pragma user_version").fetchone()[0] == latest - 2
        assert conn.execute("select count(*) from sqlite_schema where name = 'marker'").fetchone()[0] == 0
    conn.close()
