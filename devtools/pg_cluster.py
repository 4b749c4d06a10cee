"""A throwaway PostgreSQL cluster (initdb into a temp folder, a free port, a unix socket only).

For the tests (tests/fixtures_postgres.py) and for `scripts/setup.sh`, which proves the built
pgvector in a child process (`python -m tilescribe.devtools.pg_cluster --prove`) before anything
relies on it. Nothing here talks to a server the user runs.

initdb refuses to run as root: as root the cluster belongs to an unprivileged user (`nobody`
unless TILESCRIBE_PG_USER names another), started through `runuser`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

PG_BIN = Path(os.environ.get("TILESCRIBE_PG_BIN", "/usr/lib/postgresql/15/bin"))
EXTENSIONS = ("vector", "postgis")
# Throwaway data: no fsync, no full pages (a crash loses the cluster, which is thrown away anyway).
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=60")


class ClusterUnavailable(RuntimeError):
    """The PostgreSQL binaries or an extension are missing here: say which and what installs them."""


def missing_parts() -> Optional[str]:
    """Why no throwaway cluster with PostGIS and pgvector can start here, or None when one can."""
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / program).is_file():
            return (f"{PG_BIN / program} is missing: install postgresql-15 (Debian: apt-get install "
                    "postgresql-15 postgresql-15-postgis-3), or set TILESCRIBE_PG_BIN")
    share = _sharedir()
    for name in EXTENSIONS:
        if share is None or not (share / "extension" / f"{name}.control").is_file():
            what = ("pgvector: scripts/setup.sh builds it from ../shared/vendor" if name == "vector"
                    else "postgresql-15-postgis-3")
            return f"the PostgreSQL extension {name!r} is not installed ({what})"
    return None


def _sharedir() -> Optional[Path]:
    try:
        out = subprocess.run([str(PG_BIN / "pg_config"), "--sharedir"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        fallback = Path("/usr/share/postgresql") / PG_BIN.parent.name
        return fallback if fallback.is_dir() else None
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """One cluster in its own temp folder; `start()`, then `url(db)`; `stop()` removes everything."""

    def __init__(self, *, owner: Optional[str] = None):
        reason = missing_parts()
        if reason:
            raise ClusterUnavailable(reason)
        self.owner = owner or (os.environ.get("TILESCRIBE_PG_USER", "nobody") if os.geteuid() == 0 else None)
        self.folder = Path(tempfile.mkdtemp(prefix="tilescribe-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.superuser = "postgres"
        self.started = False

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.owner, "--"] if self.owner else []
        done = subprocess.run(prefix + list(command), capture_output=True, text=True)
        if done.returncode:
            raise ClusterUnavailable(f"{' '.join(command[:2])} failed ({done.returncode}): "
                                     f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done

    def start(self) -> "Cluster":
        if self.owner:
            shutil.chown(self.folder, self.owner)
        os.chmod(self.folder, 0o755)  # others (the tests' roles run as root) reach the socket
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.superuser, "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=''"
        options += "".join(f" -c {setting}" for setting in FAST_SETTINGS)
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.folder / "server.log"), "-w", "start")
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            try:
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except ClusterUnavailable:
                pass
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, database: str = "postgres", user: Optional[str] = None, **params: str) -> str:
        """A postgresql:// URL over the cluster's unix socket."""
        query = "&".join(f"{k}={v}" for k, v in {"host": str(self.folder), "port": str(self.port), **params}.items())
        return f"postgresql://{user or self.superuser}@/{database}?{query}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        """Run SQL as the superuser (autocommit: CREATE DATABASE works)."""
        import psycopg

        with psycopg.connect(host=str(self.folder), port=self.port, user=self.superuser, dbname=database,
                             autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """A new database with PostGIS and pgvector created (by the superuser, as an admin would)."""
        from psycopg import sql

        import psycopg

        with psycopg.connect(host=str(self.folder), port=self.port, user=self.superuser, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        for extension in EXTENSIONS:
            self.sql(f"create extension if not exists {extension}", name)
        return name


def prove() -> str:
    """CREATE EXTENSION vector and postgis in a throwaway cluster and answer a small HNSW query."""
    import psycopg

    with Cluster() as cluster:
        cluster.create_database("proof")
        with psycopg.connect(host=str(cluster.folder), port=cluster.port, user="postgres", dbname="proof") as conn:
            conn.execute("create table t (id int primary key, v vector(3))")
            conn.execute("insert into t values (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
            conn.execute("create index on t using hnsw (v vector_cosine_ops)")
            conn.execute("set enable_seqscan = off")
            ids = [row[0] for row in conn.execute("select id from t order by v <=> '[1,0,0]' limit 2")]
            version = conn.execute("select extversion from pg_extension where extname = 'vector'").fetchone()[0]
            postgis = conn.execute("select postgis_lib_version()").fetchone()[0]
        if ids != [1, 3]:
            raise ClusterUnavailable(f"pgvector's HNSW query gave {ids}, not [1, 3]: the build is broken")
    return f"pgvector {version} (HNSW query answered) and PostGIS {postgis} work"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prove", action="store_true", help="prove pgvector and PostGIS in a throwaway cluster")
    args = parser.parse_args(argv)
    if not args.prove:
        parser.print_help()
        return 2
    try:
        print(prove())
    except (ClusterUnavailable, ImportError) as exc:
        print(f"pg_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
