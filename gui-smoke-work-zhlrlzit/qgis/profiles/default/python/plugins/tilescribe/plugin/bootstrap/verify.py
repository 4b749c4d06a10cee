"""Prove an environment works the way the plugin uses it: start the real worker with it, caption
a tiny raster with the test model (llama-cpp-python, the MiniLM embedder, sqlite-vec) and search."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from .commands import SetupError

# Written by the environment's own Python: rasterio and numpy must work there, not in QGIS's.
RASTER_SCRIPT = r"""
import sys
import numpy as np
import rasterio
from rasterio.transform import from_origin
data = np.random.default_rng(7).integers(0, 255, (3, 64, 64), dtype=np.uint8)
with rasterio.open(sys.argv[1], "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                   crs="EPSG:32617", transform=from_origin(400000, 3300000, 1.0, 1.0)) as out:
    out.write(data)
"""
TILE = 32  # 64 x 64 px: 4 tiles
QUERY = "a tile"
TIMEOUT_S = 300


def verify_environment(python: Path, plugin_dir: Path, env: dict, report: Callable[[float, str], None]) -> dict:
    """{'modules', 'tiles', 'hits', 'seconds'}; raises SetupError saying which part failed."""
    from ..worker.client import WorkerClient, WorkerError  # stdlib only, no QGIS

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tilescribe-check-") as folder:
        raster, db = Path(folder) / "check.tif", Path(folder) / "check.tilescribe.sqlite"
        report(0.05, "Writing a 64 x 64 px test raster")
        write = subprocess.run([str(python), "-c", RASTER_SCRIPT, str(raster)], capture_output=True, text=True,
                               env=env, timeout=TIMEOUT_S)
        if write.returncode != 0:
            raise SetupError("The environment's rasterio/numpy cannot write a GeoTIFF.",
                             write.stderr.strip().splitlines()[-12:])
        client = WorkerClient(python, plugin_dir)
        try:
            report(0.15, "Starting the worker")
            hello = client.hello()
            missing = [name for name, ok in (hello.get("modules") or {}).items() if not ok]
            if missing:
                raise SetupError(f"The worker started but cannot import: {', '.join(missing)}.")
            report(0.3, "Captioning 4 tiles with the tiny test model")
            result = client.request("index", db=str(db), raster=str(raster), captioner={"test_model": True},
                                    tile_size=TILE, overlap=0, variants=1, timeout=TIMEOUT_S,
                                    on_event=lambda kind, data: _progress(kind, data, report))
            if result["done"] < 1:
                raise SetupError(f"The test caption failed: {result.get('failures') or result}.")
            report(0.85, f"Searching '{QUERY}'")
            hits = client.request("search", db=str(db), query=QUERY, k=3, timeout=TIMEOUT_S)
            if not hits:
                raise SetupError("The search of the test index found nothing.")
        except WorkerError as exc:
            raise SetupError(f"The worker failed its check: {exc}") from None
        finally:
            client.stop()
    return {"modules": hello.get("modules"), "python": hello.get("python"), "tiles": result["done"],
            "hits": len(hits), "seconds": round(time.monotonic() - start, 1)}


def _progress(kind: str, data: dict, report: Callable[[float, str], None]) -> None:
    if kind == "progress" and data.get("total"):
        report(0.3 + 0.5 * data["finished"] / data["total"], f"Captioned {data['finished']} of {data['total']} tiles")
