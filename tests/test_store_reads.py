"""Vectors read by caption id from sqlite-vec's chunks: the same floats vec0 returns, damage refused."""

from __future__ import annotations

import numpy as np
import pytest

from tilescribe.devtools.bench.synthetic import build_synthetic_index
from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.index.store_reads import WHOLE_CHUNK_MIN


@pytest.fixture(scope="module")
def three_chunks(tmp_path_factory):
    """2,500 vectors: vec0 keeps them in three chunks of 1,024."""
    return build_synthetic_index(tmp_path_factory.mktemp("reads") / "r.tilescribe.sqlite", 2500, n_queries=1)


def vec0_vectors(store, ids) -> np.ndarray:
    """vec0's own point reads, the reference."""
    return np.array([np.frombuffer(store._conn.execute("select embedding from caption_vec_1 where caption_id = ?",
                                                      (int(i),)).fetchone()[0], dtype=np.float32) for i in ids])


@pytest.mark.parametrize("count", [3, WHOLE_CHUNK_MIN * 3, 2500])  # one by one, whole chunks, everything
def test_vectors_read_by_offset_equal_vec0s_own(three_chunks, count):
    with Store(three_chunks.path) as store:
        ids = np.sort(np.random.default_rng(count).choice(np.arange(1, 2501), count, replace=False))
        found, vectors = store.vector_reader(store.run_info(three_chunks.run_id)).read(ids[::-1])
        np.testing.assert_array_equal(found, ids)
        np.testing.assert_array_equal(vectors, vec0_vectors(store, ids))


def test_ids_without_a_vector_are_left_out(three_chunks):
    with Store(three_chunks.path) as store:
        found, vectors = store.vector_reader(store.run_info(three_chunks.run_id)).read(np.array([5, 999_999, 7]))
        assert found.tolist() == [5, 7] and vectors.shape == (2, 384)


def test_a_cut_chunk_is_reported_as_damage_not_misread(tmp_path):
    index = build_synthetic_index(tmp_path / "d.tilescribe.sqlite", 100, n_queries=1)
    with Store(index.path) as store:
        store._conn.execute("update caption_vec_1_vector_chunks00 set vectors = zeroblob(100)")
        reader = store.vector_reader(store.run_info(index.run_id))
        for ids in ([1, 2], list(range(1, 101))):  # blob I/O path and whole-chunk path
            with pytest.raises(IndexFileError, match="cannot be read .*it is damaged.*restore a copy"):
                reader.read(np.array(ids))


def test_another_sqlite_vec_layout_falls_back_to_vec0s_own_reads(three_chunks):
    with Store(three_chunks.path) as store:
        reader = store.vector_reader(store.run_info(three_chunks.run_id))
        assert reader.by_offset  # this sqlite-vec: offsets in its chunks
        ids = np.array([2400, 3, 1500, 999_999])
        expected = reader.read(ids)
        reader.by_offset = False  # as when its shadow tables are not there
        found, vectors = reader.read(ids)
        np.testing.assert_array_equal(found, expected[0])
        np.testing.assert_array_equal(vectors, expected[1])
