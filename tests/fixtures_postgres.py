"""A throwaway PostgreSQL cluster with PostGIS and pgvector for the whole session (devtools/pg_cluster.py).

initdb into a temp folder, a free port, a unix socket only; stopped and removed at the end. Tests
that need it skip, naming what is missing, where the PostgreSQL binaries or extensions are not
installed (scripts/setup.sh installs them from Debian and ../shared/vendor).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster():
    try:
        import psycopg  # noqa: F401
        import pgvector  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"needs psycopg and pgvector (requirements.txt): {exc}")
    from tilescribe.devtools.pg_cluster import Cluster, missing_parts

    reason = missing_parts()
    if reason:
        pytest.skip(f"needs PostgreSQL 15 with PostGIS and pgvector: {reason}")
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_db(pg_cluster):
    """A fresh database (PostGIS and pgvector created by the superuser) for one test: its URL."""
    name = pg_cluster.create_database(f"t{next(_numbers)}")
    return pg_cluster.url(name)


def superuser_sql(pg_cluster, url: str, query: str, params=()) -> list[tuple]:
    """Run SQL on the database of `url` as the cluster's superuser, past the index's own code (a test's look
    at the tables, or damage it does on purpose): the rows, [] for a statement that returns none."""
    import psycopg

    database = url.split("@/", 1)[1].split("?", 1)[0]
    with psycopg.connect(host=str(pg_cluster.folder), port=pg_cluster.port, user="postgres", dbname=database,
                         autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def start_indexer(raster: Path, url: str, server_url: str, log: Path, *extra) -> subprocess.Popen:
    """A real `tilescribe index` process on a PostgreSQL index, captioning through `server_url`; each
    caption request it sends is logged to `log` (pid, tile) by the CLI harness."""
    harness = Path(__file__).with_name("cli_harness.py")
    env = dict(os.environ, TILESCRIBE_TEST_CAPTION_LOG=str(log))
    argv = ["index", raster, "--db", url, "--server", server_url, "--server-model", "tiny-vlm", "--tile-size", 64,
            "--variants", 1, *extra]
    return subprocess.Popen([sys.executable, str(harness), *map(str, argv)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
