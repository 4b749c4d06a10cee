"""The PostgreSQL index backend on a real throwaway cluster (PostGIS, pgvector): the CLI end to end,
schemas, migrations, roles, passwords, a server that goes away. Skipped where PostgreSQL is absent."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from fixtures_postgres import superuser_sql as _sql
from helpers import in_process_cli
from rasters import write_raster

from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.target import index_label, is_server_index, parse_target

SECRET = "s3cret-Pw"  # trust authentication ignores it: it is there to be leaked, or not
CAPTIONS = [
    {"window": [0, 0, 64, 64], "captions": ["a harbour with many boats", "boats at a pier"]},
    {"window": [64, 0, 64, 64], "captions": ["a dense green forest", "trees"]},
]


@pytest.fixture
def cli(monkeypatch, minilm, capsys):
    return in_process_cli(monkeypatch, capsys, minilm)


@pytest.fixture
def small_raster(tmp_path):
    return write_raster(tmp_path / "small.tif", width=128, height=128, crs="EPSG:32618")  # 4 tiles of 64 px


def _with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")


# -- what --db names (no server needed) ---------------------------------------------------------

def test_db_urls_and_services_are_told_from_files_and_show_no_password():
    assert is_server_index("postgresql://u@h/db") and is_server_index("postgres://h/db")
    assert is_server_index("service=team schema=ortho") and not is_server_index("/data/a.tilescribe.sqlite")
    target = parse_target("postgresql://ana:pw%21@db.example:5433/gis?schema=ortho&sslmode=verify-full&lease=30")
    assert target.schema == "ortho" and target.lease_s == 30 and target.password == "pw!"
    assert "sslmode=verify-full" in target.conninfo and "schema" not in target.conninfo  # libpq gets sslmode
    assert "pw" not in target.label and target.label.startswith("postgresql://ana@db.example:5433/gis?")
    assert "password" not in index_label("postgresql://h/db?password=pw1") and "pw1" not in index_label(
        "postgresql://h/db?password=pw1")
    service = parse_target("service=team password='x y'")
    assert service.schema == "tilescribe" and service.conninfo == "service=team password='x y'"
    assert "x y" not in service.label and service.label == "service=team"
    with pytest.raises(ValueError, match="lease"):
        parse_target("postgresql://h/db?lease=-1")


def test_a_bad_target_is_an_index_error_naming_no_password():
    from tilescribe.plugin.core.index.opening import open_index

    with pytest.raises(IndexFileError) as caught:
        open_index(f"postgresql://u:{SECRET}@127.0.0.1:1/db?connect_timeout=2", readonly=True)
    assert SECRET not in str(caught.value) and "postgresql://u@127.0.0.1:1/db" in str(caught.value)


# -- the CLI on a real cluster ----------------------------------------------------------------------

@pytest.mark.slow  # the test model captions 4 tiles
def test_index_info_search_check_import_through_the_cli(cli, pg_cluster, pg_db, small_raster, tmp_path):
    url = _with_password(pg_db) + "&schema=ortho"
    code, _, err = cli("index", small_raster, "--db", url, "--test-model", "--tile-size", 64, "--variants", 2)
    assert code == 0, err
    assert "4 of 4 tiles captioned" in err and SECRET not in err

    code, out, err = cli("info", "--db", url, "--format", "json")
    assert code == 0, err
    (run,) = json.loads(out)["runs"]
    assert run["tiles"]["done"] == 4 and run["vectors"] == 8 and run["finished_at"]
    (worker,) = run["workers"]
    assert worker["done"] == 4 and worker["claimed"] == 0 and ":" in worker["indexer"]
    code, out, _ = cli("info", "--db", url)
    assert "4 tiles stored" in out and SECRET not in out

    code, out, err = cli("search", "--db", url, "a road", "-k", 3, "--format", "json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 3 and hits[0]["crs"] == "EPSG:32618" and hits[0]["score"] >= hits[-1]["score"]

    code, out, err = cli("check", "--db", url)
    assert code == 0, err
    assert "every check passed" in out and "3 known searches" in out and SECRET not in out

    captions = tmp_path / "c.jsonl"
    captions.write_text("".join(json.dumps(c) + "\n" for c in CAPTIONS))
    code, _, err = cli("import-captions", "--raster", small_raster, "--captions", captions, "--db", url)
    assert code == 0, err
    assert "imported 2 tiles" in err and SECRET not in err
    code, out, _ = cli("search", "--db", url, "boats in a harbour", "-k", 1, "--format", "json")
    assert json.loads(out)[0]["window"] == [0, 0, 64, 64]
    code, out, _ = cli("search", "--db", url, "boats in a harbour", "-k", 2, "--lexical", "--format", "json",
                       "--extent", 500641, 0, 501280, 1e8)  # the east tile only: the GiST box filter
    assert [h["window"] for h in json.loads(out)] == [[64, 0, 64, 64]]

    # Nothing of the password anywhere in the index.
    tables = [r[0] for r in _sql(pg_cluster, pg_db, "select tablename from pg_tables where schemaname = 'ortho'")]
    for table in tables:
        rows = _sql(pg_cluster, pg_db, f'select t::text from ortho."{table}" t')
        assert not [row for row in rows if SECRET in row[0]], table


def _index_captions(url: str, raster, embedder, captions: list[dict], tmp_path) -> None:
    from tilescribe.plugin.core.index.opening import open_index
    from tilescribe.plugin.core.indexing.importer import import_captions

    path = tmp_path / f"c{abs(hash(url))}.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in captions))
    with open_index(url, create=True) as store:
        report = import_captions(store, embedder, str(raster), str(path))
    assert report.imported == len(captions)


def test_two_schemas_in_one_database_are_two_indexes(pg_db, small_raster, hashing_embedder, tmp_path):
    from tilescribe.plugin.core.index.opening import open_index

    _index_captions(pg_db + "&schema=team_a", small_raster, hashing_embedder, CAPTIONS, tmp_path)
    _index_captions(pg_db + "&schema=Team B", small_raster, hashing_embedder, CAPTIONS[:1], tmp_path)  # quoted
    with open_index(pg_db + "&schema=team_a", readonly=True) as a, open_index(pg_db + "&schema=Team B",
                                                                              readonly=True) as b:
        assert a.variant_count(a.runs()[0].id) == 4 and b.variant_count(b.runs()[0].id) == 2
    with pytest.raises(IndexFileError, match="no TileScribe schema 'nothing'"):
        open_index(pg_db + "&schema=nothing", readonly=True)


def test_migrations_run_once_and_again_change_nothing(pg_cluster, pg_db):
    import threading

    from tilescribe.plugin.core.index.opening import open_index
    from tilescribe.plugin.core.index.postgres.schema import SCHEMA_VERSION

    errors = []

    def open_and_close():
        try:
            open_index(pg_db, create=True).close()
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(3)]  # indexers starting together
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    open_and_close()
    assert errors == []
    versions = _sql(pg_cluster, pg_db, "select version from tilescribe.schema_version order by version")
    assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))


def _docs_sql(start: str) -> list[str]:
    """The SQL statements of the fenced block in docs/postgres.md that begins with `start`."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "postgres.md").read_text()
    block = next(b for b in re.findall(r"```sql\n(.*?)```", text, re.S) if b.lstrip().startswith(start))
    code = "\n".join(line.split("--", 1)[0] for line in block.splitlines())
    return [statement.strip() for statement in code.split(";") if statement.strip()]


def test_the_reader_and_writer_roles_of_the_docs(cli, pg_cluster, pg_db, small_raster, minilm, hashing_embedder,
                                                 tmp_path):
    """docs/postgres.md's role SQL as written: the writer indexes, the reader searches and cannot write,
    and a vector table the writer adds later (a new embedder) is readable by the reader too."""
    database = pg_db.split("@/", 1)[1].split("?", 1)[0]
    writer_sql, reader_sql = [], []
    for statement in _docs_sql("-- The writer"):
        statement = statement.replace("DATABASE gis", f'DATABASE "{database}"')
        (reader_sql if "SCHEMA tilescribe" in statement or "ROLE tilescribe_reader" in statement
         else writer_sql).append(statement)
    for statement in writer_sql:
        _sql(pg_cluster, pg_db, statement)
    writer = pg_db.replace("postgresql://postgres@", "postgresql://tilescribe_writer@")
    reader = pg_db.replace("postgresql://postgres@", "postgresql://tilescribe_reader@")
    _index_captions(writer, small_raster, minilm, CAPTIONS, tmp_path)  # the writer makes the schema
    for statement in reader_sql:
        _sql(pg_cluster, pg_db, statement)

    code, out, err = cli("search", "--db", reader, "boats in a harbour", "-k", 1, "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["window"] == [0, 0, 64, 64]
    code, out, err = cli("info", "--db", reader)
    assert code == 0 and "2 done" in out
    captions = tmp_path / "more.jsonl"
    captions.write_text(json.dumps({"window": [0, 64, 64, 64], "captions": ["a car park"]}) + "\n")
    code, _, err = cli("import-captions", "--raster", small_raster, "--captions", captions, "--db", reader)
    assert code != 0
    assert "may only read" in err and "writer role" in err and "docs/postgres.md" in err
    code, _, err = cli("index", small_raster, "--db", reader, "--test-model", "--tile-size", 64)
    assert code != 0 and "may only read" in err
    assert _sql(pg_cluster, pg_db, "select count(*) from tilescribe.captions") == [(4,)]

    _index_captions(writer, small_raster, hashing_embedder, CAPTIONS[:1], tmp_path)  # a new vector table
    from tilescribe.plugin.core.index.opening import open_index

    with open_index(reader, readonly=True) as store:
        run = store.runs()[-1]
        assert run.embedder == hashing_embedder.name and store.vector_count(run.id) == 2


def test_nearest_agrees_with_the_exact_scan_and_an_extent_keeps_its_tiles(pg_db, small_raster, hashing_embedder,
                                                                           tmp_path):
    from tilescribe.plugin.core.index.opening import open_index
    from tilescribe.plugin.core.search.search import SearchRequest, search

    many = [{"window": [c, r, 16, 16], "captions": [f"tile {c} {r} field", f"road {r}"]}
            for c in range(0, 128, 16) for r in range(0, 128, 16)]
    _index_captions(pg_db, small_raster, hashing_embedder, many, tmp_path)
    with open_index(pg_db, readonly=True) as store:
        run = store.run_info(store.latest_searchable_run())
        query = np.asarray(hashing_embedder.embed(["road 48"])[0], dtype=np.float32)
        exact = store.all_variants_by_distance(run, query, None)
        near = store.nearest_variants(run, query, 10, None)
        assert np.allclose([row[2] for row in near], [row[2] for row in exact][:10])  # ties: same distances
        box = (500000.0, 4199000.0, 500100.0, 4200000.0)
        boxed = store.nearest_variants(run, query, 500, box)
        tiles, _ = store.hit_rows([row[0] for row in boxed], [])
        assert boxed and all(t[4] <= box[2] and t[6] >= box[0] for t in tiles.values())
        assert len({row[1] for row in boxed}) == len(boxed) and len(boxed) < 128
        hits = search(store, hashing_embedder, SearchRequest("road 48", k=5, mode="fast"))
        assert len(hits) == 5  # "fast" means the server's HNSW here: no in-RAM index is built


def test_a_server_gone_mid_run_is_an_index_error_and_the_run_resumes(pg_cluster, pg_db, small_raster,
                                                                      hashing_embedder):
    from fakes import FakeCaptioner

    from tilescribe.plugin.core.index.opening import open_index
    from tilescribe.plugin.core.indexing.index_settings import IndexSettings
    from tilescribe.plugin.core.indexing.indexer import index_raster

    url = _with_password(pg_db)
    captioned = []

    class Cutting(FakeCaptioner):
        def caption(self, png, n_variants):
            captioned.append(png)
            if len(captioned) == 2:  # the server drops every TileScribe connection
                _sql(pg_cluster, pg_db, "select pg_terminate_backend(pid) from pg_stat_activity"
                                        " where application_name = 'tilescribe'")
            return super().caption(png, n_variants)

    settings = IndexSettings(tile_size=64, variants=1)
    store = open_index(url, create=True)
    with pytest.raises(IndexFileError) as caught:
        index_raster(store, Cutting(), hashing_embedder, str(small_raster), settings)
    store.close()
    message = str(caught.value)
    assert "Lost or could not open the connection" in message and "run the same command again" in message
    assert SECRET not in message
    with open_index(url, create=True) as store:
        report = index_raster(store, FakeCaptioner(), hashing_embedder, str(small_raster), settings)
        assert report.progress.done == 4 and store.tile_counts(report.run_id)["pending"] == 0
        assert store.variant_count(report.run_id) == 4


def test_several_indexes_with_postgres_name_what_is_wrong(cli, pg_db, tmp_path):
    """A PostgreSQL index is one of a project search's indexes (tests/test_project_search_postgres.py);
    a missing file beside it, or a schema with no index yet, is refused by name."""
    code, _, err = cli("search", "--db", pg_db, str(tmp_path / "a.tilescribe.sqlite"), "a road")
    assert code != 0 and "a.tilescribe.sqlite does not exist" in err
    code, _, err = cli("search", "--db", pg_db + "&schema=nothing_here", "--all-rasters", "a road")
    assert code != 0 and "no TileScribe schema 'nothing_here'" in err


def test_every_indexer_reads_the_raster_by_one_path_or_gdal_url(pg_db, small_raster, hashing_embedder, tmp_path):
    """A GDAL URL is a raster path like any other; another path to the same pixels is refused, naming the
    recorded one (two paths would make two runs of the same tiles)."""
    import zipfile

    from tilescribe.plugin.core.errors import IndexingError

    archive = tmp_path / "ortho.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(small_raster, "small.tif")
    url = f"/vsizip/{archive}/small.tif"
    _index_captions(pg_db, url, hashing_embedder, CAPTIONS, tmp_path)
    with pytest.raises(IndexingError) as caught:
        _index_captions(pg_db, small_raster, hashing_embedder, CAPTIONS, tmp_path)
    assert url in str(caught.value) and "same path or GDAL URL" in str(caught.value)


@pytest.mark.slow  # a worker process loading the real embedder
def test_the_worker_answers_from_a_postgres_index(pg_db, small_raster, minilm, tmp_path):
    from test_worker import WorkerProcess

    _index_captions(pg_db, small_raster, minilm, CAPTIONS, tmp_path)
    worker = WorkerProcess()
    try:
        hits = worker.ask({"id": 1, "cmd": "search", "db": pg_db, "query": "ships in a port", "k": 2})["result"]
        assert [h["window"] for h in hits] == [[0, 0, 64, 64], [64, 0, 64, 64]]
        similar = worker.ask({"id": 2, "cmd": "similar", "db": pg_db, "tile_db_id": hits[0]["tile_db_id"]})
        assert [h["window"] for h in similar["result"]] == [[64, 0, 64, 64]]
        x, y = hits[1]["bbox"][0] + 1, hits[1]["bbox"][1] + 1
        tile = worker.ask({"id": 3, "cmd": "tile_at", "db": pg_db, "x": x, "y": y})["result"]
        assert tile["captions"][0]["caption"] == "a dense green forest"
        (run,) = worker.ask({"id": 4, "cmd": "runs", "db": pg_db})["result"]
        assert run["tiles_done"] == 2 and run["vectors"] == 4
        info = worker.ask({"id": 5, "cmd": "info", "db": pg_db})["result"]
        assert info["runs"][0]["workers"][0]["done"] == 2
        failed = worker.ask({"id": 6, "cmd": "info", "db": pg_db + "&schema=absent"})
        assert failed["error"]["type"] == "IndexFileError" and "no TileScribe schema" in failed["error"]["message"]
    finally:
        assert worker.close() == 0


def test_a_libpq_service_names_the_index_and_sslmode_reaches_libpq(cli, pg_cluster, pg_db, small_raster,
                                                                   hashing_embedder, tmp_path, monkeypatch):
    from tilescribe.plugin.core.index.opening import open_index

    database = pg_db.split("@/", 1)[1].split("?", 1)[0]
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[team]\nhost={pg_cluster.folder}\nport={pg_cluster.port}\ndbname={database}\n"
                        "user=postgres\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    _index_captions("service=team schema=ortho", small_raster, hashing_embedder, CAPTIONS, tmp_path)
    with open_index(pg_db + "&schema=ortho", readonly=True) as store:
        assert store.variant_count(store.runs()[0].id) == 4
    code, out, err = cli("info", "--db", "service=team schema=ortho")
    assert code == 0 and "index service=team schema=ortho" in out and "2 done" in out, err
    with pytest.raises(IndexFileError, match="sslmode"):  # libpq read it (and refused the value)
        open_index(pg_db + "&sslmode=sometimes", readonly=True)


def test_check_reports_vectors_missing_under_their_captions(cli, pg_cluster, pg_db, small_raster, hashing_embedder,
                                                            tmp_path):
    _index_captions(pg_db, small_raster, hashing_embedder, CAPTIONS, tmp_path)
    _sql(pg_cluster, pg_db, "delete from tilescribe.caption_vec_1 where caption_id = (select min(caption_id)"
                            " from tilescribe.caption_vec_1)")  # changed by another program
    code, _, err = cli("check", "--db", pg_db)
    assert code != 0 and "failed 2 check(s): Run 1 has 4 captions but 3 vectors (4 recorded)" in err
    assert "has no vector" in err


def test_a_rendered_raster_s_source_is_recorded_as_in_a_file(pg_db, small_raster):
    """A web layer rendered to a GeoTIFF records where it came from (rasters.source) in PostgreSQL too."""
    from dataclasses import replace

    from tilescribe.plugin.core.index.opening import open_index
    from tilescribe.plugin.core.raster.tiling import open_raster, read_info

    source = {"provider": "wms", "url": "http://127.0.0.1:1/{z}/{x}/{y}.png", "layer": "basemap"}
    with open_raster(str(small_raster)) as dataset:
        plain = read_info(dataset)
    with open_index(pg_db, create=True) as store:
        raster_id = store.upsert_raster(plain)
        assert store.raster_info(raster_id)["source"] is None
        assert store.upsert_raster(replace(plain, source=json.dumps(source))) == raster_id
        assert store.raster_info(raster_id)["source"] == source
        assert store.rasters()[0]["source"] == source
