"""Index settings and index file paths, defaults written once; light enough for the QGIS side to import."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..bounds import bounded
from ..errors import IndexingError
from ..index import INDEX_SUFFIX, looks_like_index  # noqa: F401 (looks_like_index: for the QGIS side)

if TYPE_CHECKING:
    from ..raster.rendering import RenderSettings

# A model's answer is cut at 100,000 characters (captioning.parse) and a variant may hold
# 1,400: past a few tens of variants no answer could hold them all (issue 22: unbounded).
MAX_VARIANTS = 32
# raster.tiling.MAX_TILE_SIZE (tiling needs rasterio, this module must stay light; a test keeps them equal)
MAX_TILE_SIZE = 4096


def default_index_path(raster: str) -> str:
    """The index file beside a raster: `<folder>/<raster name>.tilescribe.sqlite`."""
    path = Path(raster)
    return str(path.with_name(path.stem + INDEX_SUFFIX))


@dataclass(frozen=True)
class IndexSettings:
    """How a raster is cut and captioned: the CLI, the worker and the QGIS dialog start from these defaults."""

    tile_size: int = bounded(512, 16, MAX_TILE_SIZE)
    overlap: int = bounded(0, 0, MAX_TILE_SIZE - 1)
    variants: int = bounded(5, 1, MAX_VARIANTS)
    render: "RenderSettings" = field(default_factory=lambda: _render())
    # A resumed run retries failed tiles up to MAX_TILE_ATTEMPTS runs; True retries them all.
    retry_failed: bool = False

    def __post_init__(self):
        from ..raster.tiling import check_tile_size_to_read  # rasterio: only where settings are made for a run

        check_tile_size_to_read(self.tile_size)  # where settings are made: before any model loads
        if not 1 <= self.variants <= MAX_VARIANTS:
            raise IndexingError(f"{self.variants} caption variants per tile: give 1 to {MAX_VARIANTS} "
                                "(--variants).")

    def to_dict(self) -> dict:
        """The settings a user chooses, as JSON-ready values (render's other fields are not settings)."""
        return {"tile_size": self.tile_size, "overlap": self.overlap, "variants": self.variants,
                "bands": list(self.render.bands) if self.render.bands else None,
                "retry_failed": self.retry_failed}

    @classmethod
    def from_dict(cls, data: dict) -> "IndexSettings":
        unknown = set(data) - set(KEYS)
        if unknown:
            raise IndexingError(f"Unknown index settings: {', '.join(sorted(unknown))}; "
                                f"known: {', '.join(KEYS)}.")
        try:
            values = {name: int(data[name]) for name in ("tile_size", "overlap", "variants") if name in data}
            bands = tuple(int(b) for b in data["bands"]) if data.get("bands") else None
        except (TypeError, ValueError) as exc:
            raise IndexingError(f"Index settings must be whole numbers ({exc}).") from exc
        return cls(**values, render=_render(bands), retry_failed=bool(data.get("retry_failed")))


def _render(bands=None) -> "RenderSettings":
    from ..raster.rendering import RenderSettings  # numpy: only where tiles are rendered, not in QGIS's process

    return RenderSettings(bands=bands)


KEYS = ("tile_size", "overlap", "variants", "bands", "retry_failed")
