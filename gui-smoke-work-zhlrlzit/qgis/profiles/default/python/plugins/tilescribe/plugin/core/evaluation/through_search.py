"""The proxy through search's own code path: real index files, real sqlite-vec and FTS5, `search()`.

The proxy (proxy.py) scores images with numpy and fuses whole rankings with its own BM25.
Here each fold's stand-in variants (proxy.fold_layout) are written into an index file,
one tile per image (real Store, sqlite-vec, FTS5), and every query goes through
`search()` with lexical fusion off and on, as `tilescribe search` runs it.

A search answers a list, not scores for every image, so ranks are read from its top
THROUGH_K hits. Two tie rules:
- "list": the rank is the hit's position, as the user sees it (ties already broken by
  search: sqlite-vec's order for equal cosines, then the fusion). Used for both modes.
- "cosine" (dense only): ties within TIE_TOLERANCE count against the true image for
  `ranks` and for it for `optimistic_ranks`, exactly the proxy's rule, so this run must
  reproduce the proxy's dense numbers (a check that the index path is faithful).
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ..captions import CaptionVariant
from ..index.embedder_identity import resolve_embedder
from ..errors import IndexFileError, QueryError
from ..indexing.index_settings import INDEX_SUFFIX
from ..raster.tiling import SYNTHETIC_TILE_SIZE as TILE_SIZE, synthetic_raster
from ..search.search import SearchRequest, check_query, search
from ..index.sqlite_errors import write_failure
from ..index.store import Store, TileCaptions
from .datasets import CaptionDataset
from .metrics import RECALL_AT, TIE_TOLERANCE, EvaluationError, RetrievalRun
from .proxy import PROXY_LABEL, EmbeddingCache, ProxySettings, check_settings, fold_layout

# One past the deepest R@K: a tie group reaching the last hit already ranks past R@10.
THROUGH_K = max(RECALL_AT) + 1


class CachedEmbedder:
    """An Embedder answering from the proxy's EmbeddingCache: each distinct text is embedded once."""

    def __init__(self, cache: EmbeddingCache):
        self.cache, self.name, self.dim = cache, cache.name, cache.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.cache.embed(list(texts))


def write_fold_index(store: Store, embedder, variant_texts: list[list[str]]) -> np.ndarray:
    """One tile per image holding its variants; returns the tiles' ids in dataset row order."""
    info, tiles = synthetic_raster(len(variant_texts), seed=0)  # a grid without pixels
    run_id = store.create_run(store.upsert_raster(info), resolve_embedder(store, embedder),
                              {"backend": PROXY_LABEL}, PROXY_LABEL, TILE_SIZE, 0, len(variant_texts[0]))
    store.add_tiles(run_id, tiles)
    tile_ids = np.array([tile.id for tile in store.tiles(run_id)], dtype=np.int64)
    variants = [[CaptionVariant.plain(text) for text in texts] for texts in variant_texts]
    vectors = embedder.embed([v.embedding_text() for group in variants for v in group])
    count = len(variants[0])
    store.save_captions_many([TileCaptions(int(tile_id), group, vectors[n * count:(n + 1) * count])
                              for n, (tile_id, group) in enumerate(zip(tile_ids, variants))])
    store.finish_run(run_id)
    return tile_ids


def hit_ranks(hits, target_tile: int, target_cosine: float, n_images: int) -> tuple[int, int, int]:
    """(list position, rank with cosine ties against, rank with cosine ties for) of the target.

    A target missing from the hits gets `n_images` as its position; its cosine ranks use
    `target_cosine` (any image past the list scores no more than the last hit).
    """
    position = next((n for n, hit in enumerate(hits, start=1) if hit.tile_db_id == target_tile), n_images)
    score = hits[position - 1].score if position <= len(hits) else target_cosine
    others = np.array([hit.score for hit in hits if hit.tile_db_id != target_tile])
    against = 1 + int(np.sum(others >= score - TIE_TOLERANCE))
    optimistic = 1 + int(np.sum(others > score + TIE_TOLERANCE))
    return position, against, optimistic


class _FoldRanks:
    """Ranks of every query of the dataset, filled fold by fold (rows in dataset.queries() order)."""

    def __init__(self, n_queries: int):
        self.dense_list, self.against, self.optimistic, self.fused_list = (
            np.zeros(n_queries, dtype=np.int64) for _ in range(4))


def _search_fold(dataset: CaptionDataset, cache: EmbeddingCache, settings: ProxySettings, fold: int,
                 folder: Path, out: _FoldRanks, first_row: np.ndarray) -> None:
    rows, texts, variant_texts = fold_layout(dataset, settings.variants, fold)
    texts = [check_query(text, THROUGH_K) for text in texts]  # as search() embeds them
    embedder = CachedEmbedder(cache)
    query_vectors = cache.embed(texts)  # one batch, not one model call per search
    variant_vectors = cache.embed([t for group in variant_texts for t in group]).reshape(
        len(variant_texts), settings.variants, -1)
    target_cosines = np.einsum("qd,qvd->qv", query_vectors, variant_vectors[rows]).max(axis=1)
    with Store(folder / f"fold-{fold}{INDEX_SUFFIX}", create=True) as store:
        tile_ids = write_fold_index(store, embedder, variant_texts)
        for text, row, cosine in zip(texts, rows, target_cosines):
            at = first_row[row] + fold
            dense = search(store, embedder, SearchRequest(text, THROUGH_K, lexical=False))
            out.dense_list[at], out.against[at], out.optimistic[at] = hit_ranks(
                dense, tile_ids[row], float(cosine), len(dataset))
            if settings.lexical:
                fused = search(store, embedder, SearchRequest(text, THROUGH_K, lexical=True))
                out.fused_list[at] = hit_ranks(fused, tile_ids[row], float(cosine), len(dataset))[0]


def check_through_search(dataset: CaptionDataset, settings: ProxySettings) -> None:
    """What would stop a run through search, found before any model loads: the aggregation,
    the proxy's own limits, and a caption that search refuses as a query (each caption is one)."""
    if settings.aggregation != "max":
        raise EvaluationError(
            f"--through-search scores an image by its best variant, as search does: drop "
            f"--aggregation {settings.aggregation} (or give max).")
    check_settings(dataset, settings)
    for item in dataset.items:
        for number, caption in enumerate(item.captions, start=1):
            try:
                check_query(caption, THROUGH_K)
            except QueryError as exc:
                raise EvaluationError(
                    f"{dataset.source}: caption {number} of image {item.id!r} cannot be a search query "
                    f"({str(exc).rstrip('.')}). Fix or remove that caption, or run the proxy without "
                    "--through-search."
                ) from None


def run_through_search(dataset: CaptionDataset, cache: EmbeddingCache, settings: ProxySettings,
                       folder: Optional[Path] = None) -> list[RetrievalRun]:
    """Dense by cosine ties, dense in list order, and (settings.lexical) fused in list order.

    The fold indexes go into a temporary folder inside `folder` (default: TMPDIR), removed
    afterwards, also when interrupted or failing.
    """
    check_through_search(dataset, settings)
    started = time.perf_counter()
    counts = np.array([len(item.captions) for item in dataset.items])
    first_row = np.cumsum(counts) - counts  # row of each image's caption 0
    ranks = _FoldRanks(int(counts.sum()))
    with _temporary_folder(folder) as tmp:
        try:
            for fold in range(int(counts.max())):
                _search_fold(dataset, cache, settings, fold, tmp, ranks, first_row)
        except (sqlite3.Error, IndexFileError) as exc:
            if write_failure(tmp, exc) is None and not isinstance(exc, IndexFileError):
                raise  # not about the folder or its disk: a bug, keep its traceback
            raise EvaluationError(
                f"--through-search cannot write its temporary fold indexes in {tmp.parent} ({exc}). They hold "
                "every image's variants, one index per fold: free space there, or set TMPDIR to a "
                "folder with room, and run again.") from exc
    runs = [_run(dataset, cache, settings, "search", "cosine", False, ranks.against, ranks.optimistic),
            _run(dataset, cache, settings, "search list-order", "list", False, ranks.dense_list)]
    if settings.lexical:
        runs.append(_run(dataset, cache, settings, "search+fts list-order", "list", True, ranks.fused_list))
    for run in runs:
        run.seconds = time.perf_counter() - started
    return runs


@contextlib.contextmanager
def _temporary_folder(folder: Optional[Path]) -> Iterator[Path]:
    try:
        made = tempfile.TemporaryDirectory(prefix="tilescribe-proxy-", dir=folder)
    except OSError as exc:  # no writable temporary folder at all
        raise EvaluationError(
            f"--through-search needs a temporary folder for its fold indexes and cannot make one ({exc}): "
            "set TMPDIR to a folder you can write.") from exc
    with made as tmp:
        yield Path(tmp)


def _run(dataset: CaptionDataset, cache: EmbeddingCache, settings: ProxySettings, suffix: str,
         ties: str, lexical: bool, ranks: np.ndarray, optimistic: Optional[np.ndarray] = None) -> RetrievalRun:
    name = f"{ProxySettings(settings.variants, 'max').describe(cache.name)} {suffix}"
    config = {"mode": PROXY_LABEL, "through_search": True, "embedder": cache.name,
              "variants": settings.variants, "aggregation": "max", "lexical": lexical, "ties": ties,
              "k": THROUGH_K}
    return RetrievalRun(name, PROXY_LABEL, config, dataset.queries(), dataset.image_ids,
                        ranks.copy(), (ranks if optimistic is None else optimistic).copy())


def run_search_grid(dataset: CaptionDataset, embedder, aggregation: str, variant_counts: Sequence[int],
                    lexical: bool, progress: Callable[[str], None] = lambda message: None) -> list[RetrievalRun]:
    """run_through_search for each variant count, each distinct text embedded once."""
    cache, runs = EmbeddingCache(embedder), []
    for variants in variant_counts:
        for run in run_through_search(dataset, cache, ProxySettings(variants, aggregation, lexical)):
            progress(f"{run.label} {run.name}: mR {run.recalls()['mR']:.2f} ({run.seconds:.1f} s)")
            runs.append(run)
    progress(f"{PROXY_LABEL} {cache.name}: {cache.seconds:.1f} s spent embedding texts")
    return runs
