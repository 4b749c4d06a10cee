"""Figures for the reliability notes: change detection, embedder probe and index check costs.

    python scripts/measure_reliability.py [TMP_DIR]

Writes a 4096 x 4096 RGB GeoTIFF (50 MB) and a 100,000-vector synthetic index (390 MB)
into TMP_DIR (default /tmp/tilescribe-measure) and prints what each check costs.
"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from rasters import write_raster
from fakes import FakeCaptioner, HashingEmbedder
from tilescribe.plugin.core.embedding import SentenceTransformerEmbedder
from tilescribe.plugin.core.index.embedder_identity import embedder_probe
from tilescribe.plugin.core.indexing.indexer import IndexSettings, index_raster
from tilescribe.plugin.core.index.store import Store
from tilescribe.plugin.core.indexing.changes import requeue_changed_tiles
from tilescribe.plugin.core.raster.tiling import open_raster, read_info
from tilescribe.plugin.core.index.health import check_after_crash, check_index
from tilescribe.devtools.bench.synthetic import build_synthetic_index

tmp = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tilescribe-measure")
tmp.mkdir(parents=True, exist_ok=True)
raster = tmp / "ortho.tif"
if not raster.exists():
    write_raster(raster, width=4096, height=4096, seed=1)
db = tmp / "ortho.tilescribe.sqlite"
for f in tmp.glob("ortho.tilescribe.sqlite*"):
    f.unlink()
settings = IndexSettings(tile_size=512, variants=2)
with Store(db, create=True) as store:
    t0 = time.perf_counter(); index_raster(store, FakeCaptioner(), HashingEmbedder(), str(raster), settings)
    print(f"index 4096x4096x3 uint8 ({raster.stat().st_size/1e6:.0f} MB), 64 tiles, fake captioner: {time.perf_counter()-t0:.2f} s")
    run_id = 1
    with open_raster(raster) as ds:
        t0 = time.perf_counter(); info = read_info(ds); t1 = time.perf_counter()
        requeue_changed_tiles(store, run_id, ds, [1, 2, 3], info); t2 = time.perf_counter()
    print(f"unchanged raster: read_info (stat + first/last MiB fingerprint) {1000*(t1-t0):.1f} ms, state check {1000*(t2-t1):.2f} ms")
    later = time.time() + 5; os.utime(raster, (later, later))
    with open_raster(raster) as ds:
        info = read_info(ds)
        t0 = time.perf_counter(); notes = requeue_changed_tiles(store, run_id, ds, [1, 2, 3], info); t1 = time.perf_counter()
    print(f"touched raster (mtime changed): compare pass over 64 tiles {t1-t0:.2f} s, re-queued: {notes or 'none'}")
    t0 = time.perf_counter(); index_raster(store, FakeCaptioner(), HashingEmbedder(), str(raster), settings); t1 = time.perf_counter()
    print(f"re-run of the finished index (nothing changed): {1000*(t1-t0):.0f} ms")

m = SentenceTransformerEmbedder()
t0 = time.perf_counter(); embedder_probe(m); t1 = time.perf_counter()
print(f"MiniLM probe (3 sentences, first time, once per loaded embedder): {1000*(t1-t0):.0f} ms")

big = tmp / "synthetic.tilescribe.sqlite"
if not big.exists():
    build_synthetic_index(big, 100_000)
with Store(big, readonly=True) as store:
    t0 = time.perf_counter(); report = check_index(store); t1 = time.perf_counter()
print(f"check_index on 100,000 x 384-d vectors ({big.stat().st_size/1e6:.0f} MB): {t1-t0:.1f} s, ok={report.ok}")
with Store(big, readonly=True) as store:
    t0 = time.perf_counter(); check_after_crash(store, 1); t1 = time.perf_counter()
print(f"check after a crash (counts + 3 known searches) on the same run: {t1-t0:.2f} s, no problem")
