"""Where a rendered raster came from: the GeoTIFF metadata item that says so, read and written once."""

from __future__ import annotations

import json
from typing import Optional

# The QGIS side renders a layer that is not a file (a WMS/WMTS/XYZ basemap, ...) into a GeoTIFF and
# records in this item where it came from (provider, URL without credentials, layer, extent,
# resolution, CRS, time); the indexer copies it into the index (rasters.source).
SOURCE_TAG = "TILESCRIBE_SOURCE"


def rendered_source(tags: dict) -> str:
    """The SOURCE_TAG's JSON object as compact sorted JSON; "" when absent or not a JSON object."""
    text = tags.get(SOURCE_TAG) or ""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return ""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else ""


def parse_source(text) -> Optional[dict]:
    """rasters.source as a dict (None for a plain file, or a value that is not a JSON object)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
