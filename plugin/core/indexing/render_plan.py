"""How big a layer rendered over an extent at a resolution will be, before anything is rendered.

The QGIS side renders a web layer (WMS/WMTS/XYZ) into a GeoTIFF, then indexes it as any raster:
the user sees these figures (pixels, tiles to caption, megabytes) in the Index dialog first, and
an extent or resolution that would make an absurd raster is refused here with what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import RasterError
from ..raster.tiling import TileGrid

# 30,000 px a side (2.7 GB of RGB before compression, ~3,400 tiles of 512 px): beyond it, rendering
# alone takes hours and the basemap server is hit with tens of thousands of requests.
MAX_SIDE_PX = 30_000
MIN_SIDE_PX = 16  # the smallest tile the Index dialog allows
BYTES_PER_PX = 3  # RGB, 8-bit: the rendered GeoTIFF before compression (an upper bound on disk)


@dataclass(frozen=True)
class RenderPlan:
    width_px: int
    height_px: int
    tiles: int  # tiles the index will caption (empty ones are skipped later)
    megabytes: float  # the rendered GeoTIFF, uncompressed

    def describe(self, resolution: float, crs_label: str, tile_size: int) -> str:
        return (f"{self.width_px:,} x {self.height_px:,} px at {resolution:g} {crs_label} units per pixel: "
                f"{self.tiles:,} tile{'s' if self.tiles != 1 else ''} of {tile_size} px to caption, "
                f"a GeoTIFF of up to {self.megabytes:,.1f} MB.")


def render_plan(width: float, height: float, resolution: float, tile_size: int, overlap: int) -> RenderPlan:
    """The raster an extent of `width` x `height` map units makes at `resolution` map units per pixel."""
    if not (resolution > 0 and math.isfinite(resolution)):
        raise RasterError(f"The resolution must be a positive number of map units per pixel (got {resolution}).")
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise RasterError("The extent is empty: choose the current map view, a layer's extent, or draw one.")
    width_px, height_px = math.ceil(width / resolution - 1e-9), math.ceil(height / resolution - 1e-9)
    if max(width_px, height_px) > MAX_SIDE_PX:
        coarser = max(width, height) / MAX_SIDE_PX
        raise RasterError(
            f"That extent at {resolution:g} map units per pixel makes a raster of {width_px:,} x {height_px:,} px "
            f"(at most {MAX_SIDE_PX:,} px a side): choose a smaller extent or a coarser resolution "
            f"(at least {coarser:.3g} for this extent).")
    if min(width_px, height_px) < MIN_SIDE_PX:
        raise RasterError(
            f"That extent at {resolution:g} map units per pixel makes a raster of only {width_px} x {height_px} px "
            f"(at least {MIN_SIDE_PX} px a side): choose a larger extent or a finer resolution.")
    tiles = len(TileGrid(width_px, height_px, tile_size, overlap))
    return RenderPlan(width_px, height_px, tiles, width_px * height_px * BYTES_PER_PX / 1e6)
