"""Index settings: one dataclass with a JSON round trip; the module the QGIS side imports stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tilescribe.plugin.core.errors import IndexingError
from tilescribe.plugin.core.indexing.index_settings import KEYS, IndexSettings, default_index_path
from tilescribe.plugin.core.raster.rendering import RenderSettings


@pytest.mark.parametrize("settings", [
    IndexSettings(),
    IndexSettings(256, 32, 3, RenderSettings(bands=(4, 3, 2)), retry_failed=True),
])
def test_settings_round_trip_through_json_values(settings):
    data = settings.to_dict()
    assert tuple(data) == KEYS
    assert IndexSettings.from_dict(data) == settings


def test_a_partial_dict_takes_the_defaults_and_text_numbers_are_read():
    assert IndexSettings.from_dict({}) == IndexSettings()
    assert IndexSettings.from_dict({"tile_size": "128", "bands": [1]}) == IndexSettings(
        128, render=RenderSettings(bands=(1,)))


@pytest.mark.parametrize("data, says", [
    ({"tile_sise": 256}, "Unknown index settings: tile_sise; known: tile_size"),
    ({"variants": "five"}, "must be whole numbers"),
])
def test_bad_settings_say_what_is_wrong(data, says):
    with pytest.raises(IndexingError, match=says):
        IndexSettings.from_dict(data)


def test_the_default_index_sits_beside_the_raster():
    assert default_index_path("/data/city.tif") == "/data/city.tilescribe.sqlite"


def test_importing_it_loads_neither_the_store_nor_numpy():
    code = ("import sys, tilescribe.plugin.core.indexing.index_settings as s; s.IndexSettings.tile_size; "
            "print(sorted(m for m in sys.modules if m == 'numpy' or m.endswith('index.store')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
