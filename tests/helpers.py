"""Builds small real indexes for tests: a real raster, real store, given captions."""

from __future__ import annotations

from pathlib import Path

from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.raster.tiling import (RasterInfo, Tile, TileGrid, content_bands, content_skip_reason,
                                          open_raster, read_info, read_window)


def iter_tiles(dataset, info: RasterInfo, grid: TileGrid, *, check_content: bool = True):
    """Tiles of the grid in row-major order with their skip reasons (the indexer decides per tile as it goes)."""
    bands = content_bands(dataset)
    for window in grid.windows():
        reason = content_skip_reason(read_window(dataset, window, bands)) if check_content else ""
        yield Tile(window=window, bbox=info.bbox(window), skip_reason=reason)


def build_index(db: Path, raster: Path, embedder, captions_by_tile: list[list[str]], tile_size: int = 64):
    """Index `raster`, giving the n-th content tile the n-th list of plain captions."""
    store = Store(db, create=True)
    with open_raster(raster) as ds:
        info = read_info(ds)
        tiles = list(iter_tiles(ds, info, TileGrid(info.width, info.height, tile_size)))
    raster_id = store.upsert_raster(info)
    embedder_id = store.embedder_id(embedder.name, embedder.dim)
    run_id = store.create_run(raster_id, embedder_id, {"backend": "test"}, "test", tile_size, 0, 0)
    store.add_tiles(run_id, tiles)
    for tile, texts in zip(store.tiles(run_id), captions_by_tile):
        variants = [CaptionVariant.plain(t) for t in texts]
        store.save_captions(tile.id, variants, embedder.embed([v.embedding_text() for v in variants]))
    return store, run_id


def in_process_cli(monkeypatch, capsys, embedder):
    """`tilescribe ARGS` run in-process with `embedder` instead of loading a model per command.

    Returns run(*argv) -> (exit code, stdout, stderr).
    """
    from tilescribe.plugin.cli import common, import_captions, index_command, search_command
    from tilescribe.plugin.cli.main import main

    # Each command module imported load_embedder by name: patch every reference.
    for module in (common, import_captions, index_command, search_command):
        monkeypatch.setattr(module, "load_embedder", lambda folder: embedder)

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run
