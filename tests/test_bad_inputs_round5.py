"""Issue 22, round 5: the index object (Store) misused, and the Processing algorithms' bad parameters."""

from __future__ import annotations

import os

import pytest

from tilescribe.plugin.core.errors import IndexFileError
from tilescribe.plugin.core.index.store import Store


def _names(path):
    with Store(path, readonly=True) as store:
        return [row[0] for row in store._conn.execute("select name from embedders order by id")]


def test_a_store_used_after_close_names_the_file(tmp_path):
    path = tmp_path / "a.tilescribe.sqlite"
    store = Store(path, create=True)
    store.close()
    with pytest.raises(IndexFileError, match=f"{path}.*already closed"):
        store.runs()
    with pytest.raises(IndexFileError, match="already closed"):
        store.embedder_id("e", 4)
    store.close()  # twice: nothing


def test_a_second_store_writing_while_the_first_holds_a_transaction_is_named(tmp_path):
    path = tmp_path / "a.tilescribe.sqlite"
    Store(path, create=True).close()
    first, second = Store(path), Store(path)
    second._conn.execute("pragma busy_timeout = 50")
    with first.atomic():
        first.embedder_id("one", 4)
        with pytest.raises(IndexFileError, match=f"Another program is writing to the index {path}"):
            second.embedder_id("two", 4)
    first.close(), second.close()
    assert _names(path) == ["one"]


def test_atomic_nested_or_raising_mid_batch_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "a.tilescribe.sqlite"
    with Store(path, create=True) as store:
        with store.atomic():
            store.embedder_id("kept", 4)
            with pytest.raises(ValueError), store.atomic():
                store.embedder_id("inner", 4)
                raise ValueError("mid-batch")
        with pytest.raises(ValueError), store.atomic():
            store.embedder_id("outer", 4)
            raise ValueError("mid-batch")
        assert not store._conn.in_transaction
    assert _names(path) == ["kept"]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_file_deleted_or_replaced_while_open_is_never_written_through(tmp_path, how):
    path = tmp_path / "a.tilescribe.sqlite"
    Store(path, create=True).close()
    store = Store(path)
    store.embedder_id("before", 4)
    if how == "deleted":
        path.unlink()
    else:
        other = tmp_path / "other.tilescribe.sqlite"
        with Store(other, create=True) as fresh:
            fresh.embedder_id("theirs", 4)
        os.replace(other, path)
    with pytest.raises(IndexFileError, match=f"{path} was deleted or replaced"):
        store.embedder_id("after", 4)
    store.close()
    if how == "replaced":
        # the file now there is theirs, untouched: our pages never went into the WAL beside it
        assert _names(path) == ["theirs"]
