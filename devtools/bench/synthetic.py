"""Synthetic caption-vector indexes for benchmarks, clustered like real all-MiniLM-L6-v2 captions.

The generator (documented in full in `SyntheticCaptions`): topics -> tiles -> variants.
Calibration, from all-MiniLM-L6-v2 embeddings of the 5,465 RSICD test captions
(../shared/data/captions): two captions of one image have mean cosine 0.63, of
two images of one class 0.48, of different classes 0.21; the mean vector has norm
0.47; 64 principal components hold 83% of the variance. The generator reproduces
the cosines (0.63 / 0.48 / 0.21, mean norm 0.46) with a variance spectrum that
leaves more outside 64 components (24% instead of 17%), so a projection-based first
pass loses more here than on those real captions: the benchmark errs on the hard side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ...plugin.core.captions import CaptionVariant
from ...plugin.core.index.embedder_identity import mark_unchecked
from ...plugin.core.embedding import DEFAULT_EMBEDDER
from ...plugin.core.index.store import Store, TileCaptions
from ...plugin.core.raster.tiling import SYNTHETIC_TILE_SIZE as TILE_SIZE, synthetic_raster

# Share of a caption vector's squared length (before normalising) at each level.
MEAN_SHARE, TOPIC_SHARE, TILE_SHARE, VARIANT_SHARE = 0.21, 0.27, 0.15, 0.37
# Variance of the i-th principal direction ~ (i + OFFSET) ** -ALPHA.
SPECTRUM_ALPHA, SPECTRUM_OFFSET = 1.6, 12.0
WRITE_TILES = 10_000  # tiles per transaction while building


class SyntheticCaptions:
    """Caption vectors of `n_tiles` tiles, `variants` each, deterministic for a seed.

    A tile's centre = MEAN (one direction shared by all captions, as real embeddings
    have) + its topic's centre + a tile deviation; each variant = centre + its own
    deviation, normalised. A query is a fresh variant of a chosen tile: near that
    tile, never equal to a stored vector (as a typed query paraphrases a caption).
    Topics: about sqrt(n_tiles) (447 at 200,000 tiles), drawn uniformly per tile.
    Deviations are Gaussian with the power-law spectrum above on the coordinate axes;
    no random rotation, since every method measured (cosine, PCA) is rotation-invariant.
    """

    def __init__(self, n_tiles: int, variants: int = 5, dim: int = 384, seed: int = 0):
        self.n_tiles, self.variants, self.dim = n_tiles, variants, dim
        self.rng = np.random.default_rng(seed)
        spectrum = (np.arange(1, dim + 1) + SPECTRUM_OFFSET) ** -SPECTRUM_ALPHA
        self.scale = np.sqrt(spectrum / spectrum.sum()).astype(np.float32)
        mean = self.rng.standard_normal(dim).astype(np.float32)
        self.mean = mean / np.linalg.norm(mean) * math.sqrt(MEAN_SHARE)
        self.n_topics = max(8, round(math.sqrt(n_tiles)))
        self.topics = self._deviations(self.n_topics) * math.sqrt(TOPIC_SHARE)
        self.tile_topic = self.rng.integers(0, self.n_topics, n_tiles)

    def _deviations(self, count: int) -> np.ndarray:
        return self.rng.standard_normal((count, self.dim), dtype=np.float32) * self.scale

    def tile_centres(self, start: int, stop: int) -> np.ndarray:
        """Centres of tiles start..stop-1 (call in order: the random stream is consumed)."""
        return (self.mean + self.topics[self.tile_topic[start:stop]]
                + self._deviations(stop - start) * math.sqrt(TILE_SHARE))

    def variants_of(self, centres: np.ndarray, count: Optional[int] = None) -> np.ndarray:
        """`count` (default: variants) normalised caption vectors per centre, tile by tile."""
        count = count or self.variants
        vectors = np.repeat(centres, count, axis=0) + self._deviations(len(centres) * count) * math.sqrt(VARIANT_SHARE)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass
class SyntheticIndex:
    path: Path
    run_id: int
    n_vectors: int
    queries: np.ndarray  # (q, dim): one fresh variant of each query tile
    query_tiles: np.ndarray  # tile ids (in the index) the queries were made from
    build_s: float


def build_synthetic_index(path: Path, n_vectors: int, *, dim: int = 384, variants: int = 5,
                          n_queries: int = 100, seed: int = 0, embedder_name: str = DEFAULT_EMBEDDER,
                          progress: Optional[Callable[[int], None]] = None) -> SyntheticIndex:
    """Write an index of about n_vectors caption vectors with the project's Store (bulk writes)."""
    started = time.perf_counter()
    n_tiles = max(1, n_vectors // variants)
    captions = SyntheticCaptions(n_tiles, variants, dim, seed)
    picked = np.sort(np.random.default_rng(seed + 1).choice(n_tiles, min(n_queries, n_tiles), replace=False))
    with Store(path, create=True) as store:
        run_id, tile_ids = create_run(store, n_tiles, variants, dim, embedder_name, seed)
        query_centres = []
        for start in range(0, n_tiles, WRITE_TILES):
            stop = min(n_tiles, start + WRITE_TILES)
            centres = captions.tile_centres(start, stop)
            query_centres.append(centres[picked[(picked >= start) & (picked < stop)] - start])
            texts = [f"synthetic tile {tile} of topic {captions.tile_topic[tile]}, variant {v}"
                     for tile in range(start, stop) for v in range(variants)]
            write_tiles(store, tile_ids[start:stop], captions.variants_of(centres), texts)
            if progress:
                progress(stop * variants)
        store.finish_run(run_id)
    queries = captions.variants_of(np.concatenate(query_centres), count=1)
    return SyntheticIndex(Path(path), run_id, n_tiles * variants, queries, tile_ids[picked],
                          time.perf_counter() - started)


def create_run(store: Store, n_tiles: int, variants: int, dim: int, embedder_name: str,
               seed: int = 0) -> tuple[int, np.ndarray]:
    """A run over a synthetic grid of n_tiles tiles; returns the run id and the tiles' ids in grid order."""
    info, tiles = synthetic_raster(n_tiles, seed)
    embedder_id = store.embedder_id(embedder_name, dim)
    mark_unchecked(store, embedder_id)  # random vectors: no model made them, any may search them
    run_id = store.create_run(store.upsert_raster(info), embedder_id,
                              {"backend": "synthetic", "seed": seed}, "synthetic", TILE_SIZE, 0, variants)
    store.add_tiles(run_id, tiles)
    return run_id, np.array([tile.id for tile in store.tiles(run_id)], dtype=np.int64)


def write_tiles(store: Store, tile_ids: np.ndarray, vectors: np.ndarray, texts: list[str]) -> None:
    """Save len(vectors) / len(tile_ids) variants per tile, in one transaction."""
    count = len(vectors) // len(tile_ids)
    store.save_captions_many([
        TileCaptions(int(tile_id), [CaptionVariant.plain(t) for t in texts[i * count:(i + 1) * count]],
                     vectors[i * count:(i + 1) * count])
        for i, tile_id in enumerate(tile_ids)
    ])
