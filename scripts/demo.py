"""`make demo`: index the UCM mosaic from its human captions, search it with class queries,
print the hits and precision@5, and write the hits as GeoJSON into demo-output/."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ucm_captions_test"
OUT = ROOT / "demo-output"


def main() -> int:
    from tilescribe.plugin.core.embedding import SentenceTransformerEmbedder
    from tilescribe.plugin.core.export import hits_to_geojson, hits_to_text
    from tilescribe.plugin.core.importer import import_captions
    from tilescribe.plugin.core.mosaic_demo import (
        CLASS_QUERIES, load_mosaic_ground_truth, precision_at, write_import_file)
    from tilescribe.plugin.core.search import SearchRequest, search
    from tilescribe.plugin.core.store import Store

    if not SHARED.is_dir():
        print(f"demo: the UCM mosaic is not here ({SHARED}); nothing to demo.", file=sys.stderr)
        return 1
    OUT.mkdir(exist_ok=True)
    raster = SHARED / "ucm_grid_mosaic_synthetic_georef.tif"
    truth = load_mosaic_ground_truth(SHARED / "ucm_grid_mosaic_tiles.json")
    captions = write_import_file(truth, OUT / "ucm_mosaic_captions.jsonl")
    embedder = SentenceTransformerEmbedder()
    db = OUT / "ucm_mosaic.tilescribe.sqlite"
    with Store(db, create=True) as store:
        report = import_captions(store, embedder, str(raster), str(captions))
        print(f"index {db}: {report.imported} tiles imported, {report.already_done} already there "
              "(human captions 1-4 of each tile as its variants)\n")
        precisions = []
        for wanted, query in CLASS_QUERIES.items():
            hits = search(store, embedder, SearchRequest(query, k=5))
            p5 = precision_at(hits, truth, wanted)
            precisions.append(p5)
            print(f'"{query}" ({wanted}): precision@5 {p5:.2f}\n{hits_to_text(hits)}\n')
            (OUT / f"{wanted}.geojson").write_text(hits_to_geojson(hits))
    print(f"mean precision@5 over {len(precisions)} class queries: {sum(precisions) / len(precisions):.3f}")
    print(f"GeoJSON of each query's hits: {OUT}/<class>.geojson (open them in QGIS over the mosaic)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
