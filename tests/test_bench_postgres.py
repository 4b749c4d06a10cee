"""bench-search --backend postgres: HNSW on a real PostgreSQL beside the SQLite paths, as JSON; a kept
schema is reused by the next run (the 1M-vector figures in docs/performance.md come from this code)."""

from __future__ import annotations

import json

from tilescribe.plugin.cli.main import main


def test_bench_search_postgres_reports_both_backends_and_reuses_its_schema(capsys, tmp_path, pg_db):
    argv = ["bench-search", "--backend", "postgres", "--vectors", "2000", "--queries", "8", "--format", "json",
            "--pg", pg_db, "--tmp-dir", str(tmp_path)]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["vectors"] == 2000 and first["queries"] == 8
    for key in ("exact_p50_ms", "fast_p50_ms", "fast_p95_ms", "recall_at_10", "build_s", "file_bytes"):
        assert key in first["sqlite"]
    postgres = first["postgres"]
    for key in ("hnsw_p50_ms", "hnsw_p95_ms", "load_s", "schema_bytes", "vector_table_bytes", "hnsw_bytes"):
        assert postgres[key] is not None, key
    assert postgres["cached"] is False and postgres["hnsw_built"] == "during the load"  # below the bulk threshold
    assert postgres["recall_at_10"] >= 0.9  # HNSW is approximate; on 2,000 vectors it is all but exact
    assert postgres["vector_table_bytes"] >= 2000 * 384 * 4
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)["postgres"]
    assert second["cached"] is True and second["load_s"] is None
    assert second["recall_at_10"] == postgres["recall_at_10"]
    assert list(tmp_path.iterdir()) == []
