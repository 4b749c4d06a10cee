"""Shared fixtures: paths to ../shared, small real GeoTIFFs, the real embedding model."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# llama.cpp's OpenMP threads busy-wait by default and starve the Python thread that
# samples under the grammar: 2-4x slower on 2 shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from rasters import write_raster  # noqa: E402  (tests/ is on sys.path)

# Session fixtures that write the tiny GGUF models and start a local llama_cpp.server.
pytest_plugins = ["fixtures_models", "fixtures_server", "fixtures_hub", "fixtures_postgres"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


def pytest_collection_modifyitems(items):
    """Markers `make test-fast` reads: tests/qgis are `qgis`; a test loading the real MiniLM is `slow`."""
    for item in items:
        if "qgis" in Path(str(item.fspath)).relative_to(REPO).parts[:2]:
            item.add_marker(pytest.mark.qgis)
        if "minilm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED_DATA} (absent in a user's fresh clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm():
    """The real default embedder (all-MiniLM-L6-v2), loaded once per test session."""
    from tilescribe.plugin.core.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture
def hashing_embedder():
    from fakes import HashingEmbedder

    return HashingEmbedder()


@pytest.fixture
def rgb_raster(tmp_path) -> Path:
    """A 300x200 RGB GeoTIFF in UTM 18N with varied content."""
    return write_raster(tmp_path / "rgb.tif", width=300, height=200, crs="EPSG:32618")


@pytest.fixture
def two_tile_index(tmp_path, hashing_embedder) -> Path:
    """A 128 x 64 px raster's index holding two captioned tiles ('a harbour', 'a forest')."""
    from helpers import build_index

    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    db = tmp_path / "r.tilescribe.sqlite"
    store, _ = build_index(db, raster, hashing_embedder, [["a harbour"], ["a forest"]])
    store.close()
    return db
