"""`tilescribe bench-index`: indexing time inside vs outside the model, and peak memory small vs huge raster."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ...plugin.core.errors import TileScribeError
from .bench_output import print_report
from ...plugin.cli.common import add_embedder_argument, positive_int, say

# Beside the checkout, as in the repository's tests: absent in a user's fresh clone.
SHARED_RASTERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "rasters"
DEFAULT_RASTER = "s2_eastern_shore_virginia_rgb_10m.tif"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench-index", help="measure indexing time per stage and peak memory vs raster size",
        description="Indexes a small raster with the tiny test captioner and the real embedder, then a "
                    "20,000 x 20,000 VRT mosaic of it, each in a fresh process, and reports time "
                    "inside vs outside the model call, tokens/s, tiles/s and peak RSS.")
    parser.add_argument("--raster", type=Path, default=None,
                        help=f"small raster, also the mosaic's source (default: {DEFAULT_RASTER} from ../shared)")
    parser.add_argument("--mosaic-size", type=positive_int, default=20_000, help="mosaic side in px (default 20000)")
    parser.add_argument("--tile-size", type=positive_int, default=2048, help="tile size in px (default 2048)")
    parser.add_argument("--max-tiles", type=positive_int, default=None,
                        help="stop each run after this many captioned tiles (default: all)")
    parser.add_argument("--no-mosaic", action="store_true", help="index the small raster only")
    add_embedder_argument(parser)
    parser.add_argument("--tmp-dir", default=None, help="folder for temporary files (default: system temp)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..bench.index_bench import bench_index

    with tempfile.TemporaryDirectory(prefix="tilescribe-bench-raster-", dir=args.tmp_dir) as tmp:
        small, note = _small_raster(args.raster, Path(tmp))
        if note:
            say(note)
        source = None if (args.no_mosaic or note) else small
        say(f"indexing {small}{' and a mosaic of it' if source else ''} (each in a fresh process) ...")
        result = bench_index(small, source, mosaic_size=args.mosaic_size, tile_size=args.tile_size,
                             max_tiles=args.max_tiles, embedder_folder=args.embedder, folder=args.tmp_dir)
    if note:
        result["note"] = note
    print_report(result, args.format)
    return 0


def _small_raster(given, tmp: Path) -> tuple[Path, str]:
    """(raster to index, note): without ../shared, a generated GeoTIFF and no mosaic."""
    if given is not None:
        if not Path(given).is_file():
            raise TileScribeError(f"Raster not found: {given}.")
        return Path(given), ""
    if (SHARED_RASTERS / DEFAULT_RASTER).is_file():
        return SHARED_RASTERS / DEFAULT_RASTER, ""
    return _generated_raster(tmp / "generated.tif"), (
        f"{SHARED_RASTERS} is absent: indexing a generated 1024 x 1024 GeoTIFF instead and skipping "
        "the 20,000 x 20,000 mosaic (it is made from the shared rasters).")


def _generated_raster(path: Path) -> Path:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).integers(1, 255, size=(3, 1024, 1024), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=from_origin(500000.0, 4200000.0, 10.0, 10.0)) as dst:
        dst.write(data)
    return path
