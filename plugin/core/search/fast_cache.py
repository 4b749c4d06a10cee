"""Warm fast-search indexes per (index file, run), loaded in a background thread so no query waits."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

from .fastsearch import FastIndex
from ..index.store import RunInfo, Store

# Below this many vectors the exact search takes tens of milliseconds: no index worth holding.
FAST_MIN_VECTORS = 50_000

log = logging.getLogger(__name__)

Key = tuple[str, int]


class FastIndexCache:
    """Keeps the fast indexes of the last few runs searched.

    Queries come from one thread (the worker's); only loads run in other threads,
    each with its own connection, and publish a finished index under a lock.
    """

    def __init__(self, max_runs: int = 2, max_bytes: Optional[int] = None):
        self.max_runs = max_runs  # each index holds ~300 bytes per vector: bound the RAM
        self.max_bytes = max_bytes  # and/or their total size (the newest index is always kept)
        self._ready: OrderedDict[Key, FastIndex] = OrderedDict()
        self._loading: dict[Key, threading.Thread] = {}
        self._failed: dict[Key, tuple[int, int]] = {}  # run state at a failed load: not retried until it changes
        self._lock = threading.Lock()

    def get(self, store: Store, run: RunInfo, *, wait: bool = False) -> Optional[FastIndex]:
        """The run's index, current with the file; without `wait`, None while it loads in the background."""
        key = (store.real_path, run.id)
        index = self._current(key, store)
        if index is not None:
            return index
        if not wait:
            self._start_load(key, store, run)
            return None
        self.join()  # a load already under way may give a current index
        index = self._current(key, store)
        if index is None:
            index = FastIndex.load(store, run)
            self._put(key, index)
        return index

    def ready(self, path, run_id: int) -> bool:
        with self._lock:
            return (str(Path(path).resolve()), run_id) in self._ready

    def join(self) -> None:
        """Wait for the loads under way (tests, benchmarks, shutdown)."""
        with self._lock:
            threads = list(self._loading.values())
        for thread in threads:
            thread.join()

    def _current(self, key: Key, store: Store) -> Optional[FastIndex]:
        with self._lock:
            index = self._ready.get(key)
        if index is None:
            return None
        if index.refresh(store):
            with self._lock:
                if key in self._ready:
                    self._ready.move_to_end(key)
            return index
        with self._lock:  # replaced or deleted captions: drop it, a reload starts
            self._ready.pop(key, None)
        return None

    def _put(self, key: Key, index: FastIndex) -> None:
        with self._lock:
            self._ready[key] = index
            self._ready.move_to_end(key)
            while len(self._ready) > self.max_runs or (
                    self.max_bytes is not None and len(self._ready) > 1
                    and sum(i.nbytes for i in self._ready.values()) > self.max_bytes):
                self._ready.popitem(last=False)

    def _start_load(self, key: Key, store: Store, run: RunInfo) -> None:
        state = store.vector_state(run.id)
        with self._lock:
            if key in self._loading or self._failed.get(key) == state:
                return
            thread = threading.Thread(target=self._load, args=(key, store.path, run, state),
                                      name=f"fast-index-{run.id}", daemon=True)
            self._loading[key] = thread
        thread.start()

    def _load(self, key: Key, path, run: RunInfo, state: tuple[int, int]) -> None:
        try:
            with Store(path, readonly=True) as store:
                index = FastIndex.load(store, run)
            self._put(key, index)
        except Exception as exc:  # searches go on exactly; say why once
            log.warning("fast search index for run %s of %s failed to load: %r", run.id, path, exc)
            with self._lock:
                self._failed[key] = state
        finally:
            with self._lock:
                self._loading.pop(key, None)
