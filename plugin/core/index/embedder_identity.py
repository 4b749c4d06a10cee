"""Which embedder made an index's vectors, told by what it computes rather than by its folder name.

A folder name says little: any model saved in a folder called all-MiniLM-L6-v2 is named
"all-MiniLM-L6-v2", and searching a MiniLM index with it ranks at random (scores ~0.1),
while resuming with it mixes two vector spaces in one run. So every embedder in an index
carries its vectors of a few fixed probe sentences (embedders.probe): the same model
gives the same vectors on any machine (cosine 1.0 to within float noise), another model
does not. Embedders recorded before probes existed are checked against a few of their own
stored caption vectors instead, then get their probe on first writable use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..captions import CaptionVariant
from ..embedding import Embedder
from ..errors import ModelError
from .store import Store

PROBE_SENTENCES = (
    "a harbour with small boats moored along a wooden pier",
    "dense green forest beside a winding river",
    "a large parking lot full of cars next to a shopping centre",
)
# The same model on another CPU or library version differs by ~1e-6; another model by far more.
SAME_MODEL_SIMILARITY = 0.99
LEGACY_SAMPLES = 3  # stored captions re-embedded to recognise an embedder recorded without a probe
UNCHECKED = b""  # the probe of synthetic vectors (benchmarks): not made by any model


def embedder_probe(embedder: Embedder) -> np.ndarray:
    """The embedder's vectors of the probe sentences, computed once per embedder object."""
    probe = getattr(embedder, "_tilescribe_probe", None)
    if probe is None:
        probe = np.ascontiguousarray(embedder.embed(list(PROBE_SENTENCES)), dtype=np.float32)
        try:
            embedder._tilescribe_probe = probe
        except AttributeError:  # an object that takes no attributes: compute it each time
            pass
    return probe


def resolve_embedder(store: Store, embedder: Embedder) -> int:
    """The index's id for this embedder: one that computes the same vectors, whatever its name.

    A model computing other vectors under a name the index already has is refused.
    """
    probe = embedder_probe(embedder)
    rows = store.embedders_of_dim(embedder.dim)
    for embedder_id, _, stored in rows:
        if stored and _similarity(stored, probe) >= SAME_MODEL_SIMILARITY:
            return embedder_id
    named = [embedder_id for embedder_id, name, _ in rows if name == embedder.name]
    if named:
        check_embedder(store, named[0], embedder)
        return named[0]
    embedder_id = store.embedder_id(embedder.name, embedder.dim)
    _record(store, embedder_id, probe)
    return embedder_id


def check_embedder(store: Store, embedder_id: int, embedder: Embedder) -> None:
    """Refuse `embedder` for vectors the index's embedder `embedder_id` made, unless it computes the same."""
    name, dim, stored = store.embedder_record(embedder_id)
    probe = embedder_probe(embedder)
    if stored == UNCHECKED:
        return
    if stored is not None:
        similarity = _similarity(stored, probe)
    else:
        similarity = _legacy_similarity_once(store, embedder_id, embedder)
    if similarity is not None and similarity < SAME_MODEL_SIMILARITY:
        where = getattr(embedder, "path", None)
        raise ModelError(
            f"The embedding model {embedder.name}{f' ({where})' if where else ''} computes other vectors than "
            f"the model {name} ({dim}-d) that made the vectors in {store.path}: on fixed test sentences they "
            f"agree to {similarity:.2f} (the same model gives 1.00). Models are told apart by what they "
            f"compute, not by their folder name. Give --embedder the folder of the model this index was "
            f"made with, or index into a new file (--db).")
    if stored is None and not store.readonly:
        _record(store, embedder_id, probe)  # recognised: from now on the probe decides


def mark_unchecked(store: Store, embedder_id: int) -> None:
    """For vectors made without a model (synthetic benchmarks): no probe to compare, any model may search."""
    store.set_embedder_probe(embedder_id, UNCHECKED)


def same_model(probe: bytes, other: bytes) -> bool:
    """Whether two stored probes (two indexes' records of an embedder) come from one model."""
    vectors = np.frombuffer(other, dtype=np.float32)
    if vectors.size % len(PROBE_SENTENCES):
        return False
    return _similarity(probe, vectors.reshape(len(PROBE_SENTENCES), -1)) >= SAME_MODEL_SIMILARITY


def _record(store: Store, embedder_id: int, probe: np.ndarray) -> None:
    store.set_embedder_probe(embedder_id, np.ascontiguousarray(probe, dtype=np.float32).tobytes())


def _similarity(stored: bytes, probe: np.ndarray) -> float:
    """The lowest cosine between matching probe vectors (0 when their shapes differ)."""
    vectors = np.frombuffer(stored, dtype=np.float32)
    if vectors.size != probe.size:
        return 0.0
    return float(np.min(np.sum(vectors.reshape(probe.shape) * probe, axis=1)))


def _legacy_similarity_once(store: Store, embedder_id: int, embedder: Embedder) -> Optional[float]:
    """_legacy_similarity, remembered per embedder object: a read-only index cannot record its
    probe, and the warm worker would otherwise re-embed stored captions at every search."""
    seen = getattr(embedder, "_tilescribe_legacy", None)
    if seen is None:
        seen = {}
        try:
            embedder._tilescribe_legacy = seen
        except AttributeError:  # an object that takes no attributes: compute it each time
            pass
    key = (str(Path(store.path).resolve()), embedder_id)
    if key not in seen:
        seen[key] = _legacy_similarity(store, embedder_id, embedder)
    return seen[key]


def _legacy_similarity(store: Store, embedder_id: int, embedder: Embedder) -> Optional[float]:
    """Highest cosine between a few stored caption vectors and this embedder's; None with no captions.

    The highest: one caption whose vector the model reproduces is proof enough (a vector
    written by hand, as tests do, must not make the right model look wrong), and another
    model reproduces none.
    """
    rows = store.embedder_caption_sample(embedder_id, LEGACY_SAMPLES)
    if not rows:
        return None
    found, stored = store.vector_reader(store.run_info(rows[0][4])).read(np.array([row[0] for row in rows]))
    rows = [row for row in rows if row[0] in set(found.tolist())]  # ascending ids, as `found`
    if not rows:  # captions whose vectors are gone (damaged sqlite-vec tables): nothing to compare
        return None
    fresh = embedder.embed([CaptionVariant(*row[1:4]).embedding_text() for row in rows])
    if stored.shape != fresh.shape:
        return 0.0
    return float(np.max(np.sum(stored * fresh, axis=1)))
