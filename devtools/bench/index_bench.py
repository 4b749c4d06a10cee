"""bench-index: where indexing time goes (inside vs outside the model) and whether memory grows with the raster.

Each measurement runs in a fresh process (`python -m ...bench.index_bench RASTER ...`),
so its peak RSS is its own: a small raster and a 20,000 x 20,000 mosaic of the same
imagery are indexed with the same tile size and tile count limit, and their peaks compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

# The child reports only this line on stdout; model libraries print to stderr.
RESULT_PREFIX = "BENCH-INDEX-RESULT "


def rss_mb() -> float:
    """Current resident set size (VmRSS), in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def build_mosaic_vrt(source: Path, out: Path, size: int) -> Path:
    """A size x size VRT repeating `source` side by side (GDAL's Python API): real pixels everywhere."""
    from osgeo import gdal

    gdal.UseExceptions()
    src = gdal.Open(str(source))
    width, height, bands = src.RasterXSize, src.RasterYSize, min(3, src.RasterCount)
    vrt = gdal.GetDriverByName("VRT").Create(str(out), size, size, bands, src.GetRasterBand(1).DataType)
    x0, dx, rx, y0, ry, dy = src.GetGeoTransform()
    vrt.SetGeoTransform((x0, dx, rx, y0, ry, dy))
    vrt.SetProjection(src.GetProjection())
    for band_number in range(1, bands + 1):
        band = vrt.GetRasterBand(band_number)
        band.SetColorInterpretation(src.GetRasterBand(band_number).GetColorInterpretation())
        for row in range(math.ceil(size / height)):
            for col in range(math.ceil(size / width)):
                band.SetMetadataItem(f"source_{row}_{col}", _simple_source(source, band_number, width, height,
                                                                          col * width, row * height),
                                     "new_vrt_sources")
    vrt.FlushCache()
    vrt = src = None  # closing writes the file
    return out


def _simple_source(path: Path, band: int, width: int, height: int, x: int, y: int) -> str:
    return (f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{path}</SourceFilename>"
            f"<SourceBand>{band}</SourceBand>"
            f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{width}\" ySize=\"{height}\"/>"
            f"<DstRect xOff=\"{x}\" yOff=\"{y}\" xSize=\"{width}\" ySize=\"{height}\"/></SimpleSource>")


def measure_indexing(raster: Path, db: Path, tile_size: int, max_tiles: Optional[int],
                     embedder_folder: Optional[str] = None) -> dict:
    """Index `raster` with the tiny test captioner and the real embedder; timings, throughput, RSS."""
    from ...plugin.core.captioning.factory import CaptionerSettings, make_captioner
    from ...plugin.core.embedding import SentenceTransformerEmbedder
    from ...plugin.core.indexing.indexer import IndexSettings, index_raster
    from ...plugin.core.index.store import Store

    embedder = SentenceTransformerEmbedder(embedder_folder)
    captioner = make_captioner(CaptionerSettings(test_model=True))
    rss_models = rss_mb()
    captioned = [0]

    def progress(p) -> None:
        captioned[0] = p.captioned_now

    started = time.perf_counter()
    try:
        with Store(db, create=True) as store:
            report = index_raster(store, captioner, embedder, str(raster), IndexSettings(tile_size=tile_size),
                                  progress=progress,
                                  cancel=lambda: max_tiles is not None and captioned[0] >= max_tiles)
    finally:
        captioner.close()
    return _summary(report, time.perf_counter() - started, rss_models)


def _summary(report, wall_s: float, rss_models: float) -> dict:
    t, p = report.timings, report.progress
    tiles = max(1, p.captioned_now)
    return {
        "tiles_total": p.total, "tiles_captioned": p.captioned_now, "tiles_skipped": p.skipped,
        "tiles_failed": p.failed, "wall_s": round(wall_s, 2), "tiles_per_s": round(p.captioned_now / wall_s, 2),
        "model_s_per_tile": round(t.model / tiles, 4), "outside_model_s_per_tile": round(t.outside_model() / tiles, 4),
        "outside_model": {stage: round(getattr(t, stage) / tiles, 4)
                          for stage in ("read", "render", "embed", "store")},
        "completion_tokens": t.completion_tokens,
        "tokens_per_s": round(t.completion_tokens / t.model, 1) if t.model else 0.0,
        "rss_after_loading_models_mb": round(rss_models),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def run_in_fresh_process(raster: Path, tile_size: int, max_tiles: Optional[int], workdir: Path,
                         embedder_folder: Optional[str] = None) -> dict:
    """measure_indexing in a new Python process, so its peak RSS is separate from any other."""
    command = [sys.executable, "-m", __name__, str(raster), "--db", str(workdir / f"{raster.stem}.tilescribe.sqlite"),
               "--tile-size", str(tile_size)]
    if max_tiles:
        command += ["--max-tiles", str(max_tiles)]
    if embedder_folder:
        command += ["--embedder", embedder_folder]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"indexing {raster} in a child process failed (exit code {done.returncode}); "
                       "its messages are above")


def bench_index(small: Path, mosaic_source: Optional[Path], *, mosaic_size: int = 20_000, tile_size: int = 1024,
                max_tiles: Optional[int] = None, embedder_folder: Optional[str] = None,
                folder: Optional[str] = None) -> dict:
    """Small raster, then (when a source is given) a mosaic_size^2 VRT of it; both in fresh processes."""
    with tempfile.TemporaryDirectory(prefix="tilescribe-bench-index-", dir=folder) as tmp:
        workdir = Path(tmp)
        result = {"tile_size": tile_size, "max_tiles": max_tiles,
                  "small": {"raster": str(small), **_raster_size(small),
                            **run_in_fresh_process(small, tile_size, max_tiles, workdir, embedder_folder)}}
        if mosaic_source is not None:
            vrt = build_mosaic_vrt(mosaic_source, workdir / "mosaic.vrt", mosaic_size)
            result["large"] = {"raster": f"{mosaic_size} x {mosaic_size} VRT mosaic of {mosaic_source.name}",
                               **_raster_size(vrt),
                               **run_in_fresh_process(vrt, tile_size, max_tiles, workdir, embedder_folder)}
            result["peak_rss_growth_mb"] = result["large"]["peak_rss_mb"] - result["small"]["peak_rss_mb"]
    return result


def _raster_size(path: Path) -> dict:
    import rasterio

    with rasterio.open(path) as dataset:
        return {"width": dataset.width, "height": dataset.height}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="one bench-index measurement (run by bench-index)")
    parser.add_argument("raster", type=Path)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--max-tiles", type=int, default=None)
    parser.add_argument("--embedder", default=None)
    args = parser.parse_args(argv)
    result = measure_indexing(args.raster, args.db, args.tile_size, args.max_tiles, args.embedder)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
