"""A throwaway PostgreSQL cluster with PostGIS and pgvector for the whole session (devtools/pg_cluster.py).

initdb into a temp folder, a free port, a unix socket only; stopped and removed at the end. Tests
that need it skip, naming what is missing, where the PostgreSQL binaries or extensions are not
installed (scripts/setup.sh installs them from Debian and ../shared/vendor).
"""

from __future__ import annotations

import itertools

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
