"""What the model sees: band choice, stretch of 16-bit and float data, masked pixels, size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from rasterio.enums import ColorInterp as CI

from tilescribe.plugin.core.errors import RasterError
from tilescribe.plugin.core.raster.rendering import choose_bands, encode_png, to_rgb8


def test_bands_follow_the_colour_interpretation():
    assert choose_bands([CI.blue, CI.green, CI.red, CI.undefined], 4, None) == (3, 2, 1)
    assert choose_bands([CI.red, CI.green, CI.blue, CI.alpha], 4, None) == (1, 2, 3)
    assert choose_bands([CI.gray], 1, None) == (1,)
    assert choose_bands([CI.undefined] * 6, 6, None) == (1, 2, 3)
    assert choose_bands([CI.undefined] * 6, 6, [4, 3, 2]) == (4, 3, 2)


@pytest.mark.parametrize("bands", [[0], [1, 2], [1, 2, 7]])
def test_impossible_band_choice_is_refused(bands):
    with pytest.raises(RasterError, match="bands"):
        choose_bands([CI.undefined] * 6, 6, bands)


def test_sixteen_bit_is_stretched_and_masked_pixels_are_black():
    data = np.ma.masked_equal(np.arange(3 * 16, dtype="uint16").reshape(3, 4, 4) * 100, 0)
    rgb = to_rgb8(data)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0]  # masked
    assert rgb.max() == 255


def test_float_with_nan_renders_nan_as_black():
    data = np.ma.MaskedArray(np.array([[[np.nan, 1.0], [2.0, 3.0]]], dtype="float32"))
    rgb = to_rgb8(data)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [255, 255, 255]


def test_eight_bit_is_shown_as_is():
    data = np.ma.MaskedArray(np.full((3, 2, 2), 77, dtype="uint8"))
    assert to_rgb8(data)[0, 0].tolist() == [77, 77, 77]


def test_large_tiles_are_downscaled_keeping_aspect():
    png = encode_png(np.zeros((1024, 512, 3), dtype=np.uint8), max_side=448)
    assert Image.open(io.BytesIO(png)).size == (224, 448)
