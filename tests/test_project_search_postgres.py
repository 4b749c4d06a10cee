"""A project search over index files and a PostgreSQL index together (core/search/project.py).

Real parts: three small file indexes with real all-MiniLM-L6-v2 vectors (test_project_search's), one
of them copied into the throwaway PostgreSQL cluster (tests/fixtures_postgres.py) with `tilescribe
copy`'s copy_index; the merged ranking over two files and the PostgreSQL copy must be the ranking
over the three files, each PostgreSQL hit naming its index without the password.
"""

from __future__ import annotations

import io
import json

import pytest

from fakes import HashingEmbedder
from helpers import build_index, in_process_cli
from rasters import write_raster
from test_project_search import RASTERS, project  # noqa: F401  (the module fixture)
from tilescribe.plugin.core.errors import QueryError
from tilescribe.plugin.core.index.copying import copy_index
from tilescribe.plugin.core.index.opening import open_index
from tilescribe.plugin.core.search.project import StorePool, search_project
from tilescribe.plugin.core.search.search import SearchRequest

QUERIES = ("airplanes on a runway", "boats in a harbour", "trees", "cars", "water")


@pytest.fixture
def airport_pg(project, pg_db):  # noqa: F811
    """The airport file index copied into PostgreSQL: its URL with a password (trust auth ignores it)."""
    url = pg_db.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@") + "&schema=airport"
    with open_index(project / "airport.tilescribe.sqlite", readonly=True) as src, \
            open_index(url, create=True) as dst:
        copy_index(src, dst)
    return url


def _key(hit):
    return (hit.raster_path, hit.tile_id, hit.caption)


@pytest.mark.parametrize("lexical", [False, True])
def test_a_postgres_index_ranks_with_the_files_as_its_file_would(project, airport_pg, minilm, lexical):  # noqa: F811
    files = [project / f"{name}.tilescribe.sqlite" for name in ("harbour", "forest", "airport")]
    mixed = [*files[:2], airport_pg]
    for query in QUERIES:
        want = search_project(files, minilm, SearchRequest(query, k=8, lexical=lexical)).hits
        got = search_project(mixed, minilm, SearchRequest(query, k=8, lexical=lexical))
        if not lexical:
            assert [_key(h) for h in got.hits] == [_key(h) for h in want], query
            assert [h.score for h in got.hits] == pytest.approx([h.score for h in want], abs=1e-5)
        else:  # words rank by ts_rank_cd on PostgreSQL, BM25 in a file (docs/postgres.md): each index's
            # own order is kept, and the lists are interleaved by position as for files
            alone = search_project([airport_pg], minilm, SearchRequest(query, k=8, lexical=True)).hits
            on_pg = [_key(h) for h in got.hits if h.index == alone[0].index]
            assert on_pg == [_key(h) for h in alone][:len(on_pg)] and on_pg, query
            in_files = [_key(h) for h in got.hits if h.index != alone[0].index]
            assert in_files == [_key(h) for h in want if not h.raster_path.endswith("airport.tif")][:len(in_files)]
            assert len(got.hits) == 8
        assert [h.rank for h in got.hits] == list(range(1, len(want) + 1))
        labels = {h.index for h in got.hits if h.raster_path.endswith("airport.tif")}
        assert labels and all(label.startswith("postgresql://postgres@/") and "schema=airport" in label
                              for label in labels), labels
        assert not any("s3cret" in h.index for h in got.hits) and not any("s3cret" in i for i, _ in got.searched)
        assert len(got.searched) == 3
    top = search_project(mixed, minilm, SearchRequest("airplanes on a runway", k=3)).hits[0]
    assert top.raster_path.endswith("airport.tif") and top.index.startswith("postgresql://")


def test_a_postgres_index_of_another_embedder_is_refused_or_left_out_with_the_reason(project, pg_db, minilm,  # noqa: F811
                                                                                     tmp_path):
    other = write_raster(tmp_path / "other.tif", width=128, height=128)
    build_index(tmp_path / "other.tilescribe.sqlite", other, HashingEmbedder(), [["boats"]] * 4)[0].close()
    url = pg_db.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@") + "&schema=other"
    with open_index(tmp_path / "other.tilescribe.sqlite", readonly=True) as src, open_index(url, create=True) as dst:
        copy_index(src, dst)
    paths = [project, url]
    with pytest.raises(QueryError, match=r"another embedding model.*schema=other.*hashing-test") as refused:
        search_project(paths, minilm, SearchRequest("boats", k=5))
    assert "s3cret" not in str(refused.value)
    result = search_project(paths, minilm, SearchRequest("boats", k=5), other_embedders="skip")
    assert len(result.hits) == 5 and all(h.index.endswith(".tilescribe.sqlite") for h in result.hits)
    (note,) = [line for line in result.skipped if "schema=other" in line]
    assert "another embedder, left out" in note and "s3cret" not in note


def test_the_cli_and_the_worker_search_a_file_and_a_postgres_index(project, airport_pg, minilm, monkeypatch,  # noqa: F811
                                                                   capsys):
    from tilescribe.plugin.worker.server import Worker

    run = in_process_cli(monkeypatch, capsys, minilm)
    harbour = str(project / "harbour.tilescribe.sqlite")
    code, out, err = run("search", "--db", harbour, airport_pg, "--format", "json", "-k", "3", "airplanes on a runway")
    assert code == 0, err
    hits = json.loads(out)
    assert hits[0]["raster"].endswith("airport.tif") and hits[0]["index"].startswith("postgresql://postgres@/")
    assert "s3cret" not in out + err and "searched 2 run(s) in 2 indexes" in err

    # One PostgreSQL index with --all-rasters goes through the project search too.
    code, out, err = run("search", "--db", airport_pg, "--all-rasters", "--format", "json", "-k", "2", "cars")
    assert code == 0 and {h["raster"].rsplit("/", 1)[1] for h in json.loads(out)} == {"airport.tif"}, err

    stream = io.StringIO()
    worker = Worker(stream)
    worker._embedders[None] = minilm
    for n in range(2):  # the second query reuses the open PostgreSQL connection (StorePool)
        worker.dispatch({"id": n, "cmd": "search", "dbs": [harbour, airport_pg], "query": "boats in a harbour", "k": 6})
    replies = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["ok"] for r in replies] == [True, True], replies
    assert replies[0]["result"] == replies[1]["result"]
    first = replies[0]["result"]
    assert first[0]["raster"].endswith("harbour.tif") and first[0]["index"] == harbour
    assert any(h["index"].startswith("postgresql://") for h in first)
    assert len(worker.stores()) == 2


def test_the_pool_connects_again_after_the_server_dropped_its_connection(project, airport_pg, minilm, pg_cluster):  # noqa: F811
    import psycopg

    pool = StorePool()
    first = search_project([airport_pg], minilm, SearchRequest("cars", k=2), pool=pool).hits
    database = airport_pg.split("@/", 1)[1].split("?", 1)[0]
    with psycopg.connect(host=str(pg_cluster.folder), port=pg_cluster.port, user="postgres", dbname=database,
                         autocommit=True) as admin:  # as a server restart would: every session of ours ends
        admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tilescribe'"
                      " and pid != pg_backend_pid()")
    with pytest.raises(Exception, match="PostgreSQL index"):  # the broken connection is found by using it ...
        search_project([airport_pg], minilm, SearchRequest("cars", k=2), pool=pool)
    again = search_project([airport_pg], minilm, SearchRequest("cars", k=2), pool=pool).hits  # ... then replaced
    assert [_key(h) for h in again] == [_key(h) for h in first]
    pool.close()
