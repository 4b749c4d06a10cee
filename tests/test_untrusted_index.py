"""Issue 22: an index file from someone else is untrusted input: no views or triggers, bounded queries."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import in_process_cli
from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.store import Store

HARNESS = Path(__file__).with_name("cli_harness.py")
NEVER_ENDS = "with recursive r(x) as (select 1 union all select x + 1 from r) select x from r"


@pytest.fixture
def index(two_tile_index):
    return two_tile_index


def _alter(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_a_trigger_in_a_received_index_is_refused_by_every_command(index, monkeypatch, capsys, hashing_embedder):
    _alter(index, "create trigger rewrite after insert on captions begin "
                  "update captions set caption = 'pwned' where rowid = new.rowid; end")
    cli = in_process_cli(monkeypatch, capsys, hashing_embedder)
    for argv in (("search", "harbour", "--db", index), ("info", "--db", index)):
        code, out, err = cli(*argv)
        assert code == 2, (argv, err)
        assert f"Index {index} holds schema objects TileScribe never creates (trigger 'rewrite')" in err
        assert "drop trigger rewrite" in err
    with pytest.raises(IndexFileError, match="trigger 'rewrite'"):
        Store(index, create=True)  # index / import-captions


def test_check_reports_views_and_triggers_as_failed_checks(index, monkeypatch, capsys, hashing_embedder):
    _alter(index, f"create view forever as {NEVER_ENDS}",
           "create trigger t2 before delete on tiles begin select 1; end")
    cli = in_process_cli(monkeypatch, capsys, hashing_embedder)
    code, out, err = cli("check", "--db", index)
    assert code == 2
    assert f"Index {index} failed 1 check(s)" in err and "view 'forever'" in err and "trigger 't2'" in err


def test_a_view_named_tiles_that_never_ends_does_not_hang_info_search_or_check(index):
    _alter(index, "alter table tiles rename to tiles_kept",
           f"create view tiles as select x as id, 1 as run_id from ({NEVER_ENDS})")
    for argv in (("info", "--db", index), ("search", "harbour", "--db", index), ("check", "--db", index)):
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(HARNESS), *argv[:1], *map(str, argv[1:])], capture_output=True,
                              text=True, timeout=60, cwd=HARNESS.parent)
        assert done.returncode == 2, done.stderr
        assert "view 'tiles'" in done.stderr and time.monotonic() - started < 30


def test_a_query_that_runs_too_long_is_stopped_with_a_message(index, monkeypatch):
    from tilescribe.plugin.core.index import untrusted
    from tilescribe.plugin.core.index.sqlite_errors import read_failure

    monkeypatch.setattr(untrusted, "QUERY_LIMIT_S", 0.5)
    with Store(index, readonly=True) as store:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as stopped:
            store._conn.execute(f"select count(*) from ({NEVER_ENDS})").fetchone()
        assert time.monotonic() - started < 10
        failure = read_failure(index, stopped.value)
    assert isinstance(failure, IndexFileError)
    assert f"A query on index {index} ran longer than 0.5 s and was stopped" in str(failure)
