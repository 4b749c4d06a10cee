"""Search hits as JSON, GeoJSON (tile polygons in the raster's CRS) or a text table."""

from __future__ import annotations

import json
from typing import Sequence

from .search import SearchHit
from ..terminal_text import for_terminal, json_for_terminal


def hits_to_json(hits: Sequence[SearchHit]) -> str:
    return json_for_terminal([hit.to_json() for hit in hits], indent=2, ensure_ascii=False)


def hits_to_geojson(hits: Sequence[SearchHit], crs_wkt: str = "") -> str:
    """A FeatureCollection of tile boxes. The CRS is the raster's (named in `crs`), not
    necessarily WGS 84 as RFC 7946 expects: GDAL and QGIS read the `crs` member."""
    features = []
    for hit in hits:
        minx, miny, maxx, maxy = hit.bbox
        ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {k: v for k, v in hit.to_json().items() if k != "bbox"}
            | {"window": json.dumps(hit.window.as_list())},
        })
    collection = {"type": "FeatureCollection", "features": features}
    crs_name = _ogc_crs_name(hits[0].crs) if hits else ""
    if crs_name:
        collection["crs"] = {"type": "name", "properties": {"name": crs_name}}
    return json_for_terminal(collection, indent=2, ensure_ascii=False)


def _ogc_crs_name(label: str) -> str:
    if label.startswith("EPSG:"):
        return f"urn:ogc:def:crs:EPSG::{label.split(':', 1)[1]}"
    return ""


def hits_to_text(hits: Sequence[SearchHit]) -> str:
    if not hits:
        return "no results"
    lines = []
    for hit in hits:
        caption = hit.caption if len(hit.caption) <= 90 else hit.caption[:87] + "..."
        lines.append(for_terminal(f"{hit.rank:>3}  {hit.score:.3f}  {hit.tile_id:<22} {caption}"))
    return "\n".join(lines)
