"""The UCM mosaic demo: its human captions as an import file, and class queries scored by precision@5."""

from __future__ import annotations

import json
from pathlib import Path

# One query per UC Merced class, written by us in a user's words (not taken from the captions).
CLASS_QUERIES = {
    "agricultural": "farmland with crop fields",
    "airplane": "an airplane parked at an airport",
    "baseballdiamond": "a baseball field",
    "beach": "a sandy beach next to the sea",
    "buildings": "large buildings in a city",
    "chaparral": "dry land with scattered shrubs",
    "denseresidential": "a crowded neighbourhood of houses packed close together",
    "forest": "a dense forest of trees",
    "freeway": "a freeway with cars",
    "golfcourse": "a golf course with green lawns",
    "harbor": "boats docked in a harbor",
    "intersection": "a road intersection",
    "mediumresidential": "a residential area with houses and gardens",
    "mobilehomepark": "rows of mobile homes",
    "overpass": "a freeway interchange with an overpass",
    "parkinglot": "a parking lot full of cars",
    "river": "a river winding through the land",
    "runway": "an airport runway",
    "sparseresidential": "a few scattered houses with large yards",
    "storagetanks": "round storage tanks",
    "tenniscourt": "a tennis court",
}


def load_mosaic_ground_truth(tiles_json: Path) -> dict:
    """{window tuple: {"class": str, "captions": [str]}} from ucm_grid_mosaic_tiles.json."""
    data = json.loads(Path(tiles_json).read_text())
    return {tuple(t["pixel_window"]): {"class": t["class"], "captions": t["captions"]} for t in data["tiles"]}


def write_import_file(ground_truth: dict, out: Path, variants: int = 4) -> Path:
    """Captions 1..variants of each tile as its caption variants (the 5th stays unseen)."""
    with open(out, "w", encoding="utf-8") as handle:
        for window, truth in ground_truth.items():
            record = {"window": list(window), "captions": truth["captions"][:variants]}
            handle.write(json.dumps(record) + "\n")
    return out


def precision_at(hits, ground_truth: dict, wanted_class: str, k: int = 5) -> float:
    top = hits[:k]
    return sum(ground_truth[tuple(h.window.as_list())]["class"] == wanted_class for h in top) / k
