"""The PostgreSQL index (PostGIS boxes, pgvector vectors, full-text words): `store.PgStore` owns it.

Reached through `index.opening.open_index` when `--db` is a postgresql:// URL or a libpq service;
psycopg is imported only then, so the SQLite path needs none of it.
"""
