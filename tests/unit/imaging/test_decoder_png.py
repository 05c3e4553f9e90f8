"""PNG: bit depths, palettes, transparency, reduction, typed failures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from skinbatch.imaging import (
    CorruptImageError,
    DecompressionBombError,
    Preprocessing,
    TruncatedImageError,
    decode,
    decode_image,
    preprocess,
)

from . import _factories as f

pytestmark = pytest.mark.timeout(30)


def test_rgb8_is_lossless() -> None:
    arr = f.photo(50, 40)
    img = decode(f.png(Image.fromarray(arr)))
    assert np.array_equal(img.arrays[0], arr)
    assert not img.monochrome and not img.had_alpha and img.decoder == "pillow"


def test_grey16_is_scaled_linearly() -> None:
    values = np.array([[0, 65535, 32768, 257]], dtype=np.uint16)
    rows = [values.astype(">u2").tobytes()]
    img = decode(f.png_raw(4, 1, 16, 0, rows))
    assert img.monochrome
    assert img.arrays[0][0, :, 0].tolist() == [0, 255, 128, 1]


def test_rgb16_keeps_the_high_byte() -> None:
    px = np.array([[[65535, 0, 32768], [256, 512, 1024]]], dtype=np.uint16)
    img = decode(f.png_raw(2, 1, 16, 2, [px.astype(">u2").tobytes()]))
    assert np.abs(img.arrays[0].astype(int) - (px >> 8)).max() <= 1


@pytest.mark.parametrize("mode", ["L", "1", "I;16"])
def test_grey_modes_are_flagged(mode: str) -> None:
    grey = Image.fromarray(f.photo(20, 10)[:, :, 0])
    im = grey.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    img = decode(f.png(im))
    assert img.monochrome and img.arrays[0].shape == (10, 20, 3)


def test_palette() -> None:
    arr = f.photo(30, 20)
    im = Image.fromarray(arr).quantize(16)
    img = decode(f.png(im))
    assert not img.monochrome and f.mad(img.arrays[0], np.asarray(im.convert("RGB"))) == 0


def test_palette_with_transparency_is_composited_on_white() -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 1)
    img = decode(f.png(im, transparency=1))
    assert img.had_alpha
    assert img.arrays[0][0, 0].tolist() == [255, 255, 255] and img.arrays[0][1, 1].tolist() == [255, 0, 0]


def test_rgba_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = [[255, 0], [128, 255]]
    (out,) = decode_image(f.png(Image.fromarray(rgba, "RGBA")))
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [227, 127, 127]  # round((200*128 + 255*127) / 255)


def test_grey_alpha() -> None:
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0] = 10
    la[..., 1] = [[255, 0], [255, 255]]
    img = decode(f.png(Image.fromarray(la, "LA")))
    assert img.monochrome and img.had_alpha
    assert img.arrays[0][0, 1].tolist() == [255, 255, 255] and img.arrays[0][0, 0].tolist() == [10, 10, 10]


def test_reduction_with_a_target_keeps_the_result() -> None:
    arr = f.photo(900, 700, seed=5)
    data = f.png(Image.fromarray(arr))
    p = Preprocessing(size=100)
    img = decode(data, target=p)
    assert img.reduction == 7 and min(img.arrays[0].shape[:2]) >= 100
    assert f.mad(preprocess(img.arrays[0], p), preprocess(arr, p)) <= 2


def test_truncated_png() -> None:
    data = f.png(Image.fromarray(f.photo(64, 64)))
    with pytest.raises(TruncatedImageError):
        decode(data[: len(data) // 2])
    with pytest.raises(TruncatedImageError):
        decode(data[:20])


def test_corrupt_crc() -> None:
    data = bytearray(f.png(Image.fromarray(f.photo(16, 16))))
    data[29] ^= 0xFF  # inside IHDR's CRC
    with pytest.raises(CorruptImageError):
        decode(bytes(data))


def test_ihdr_bomb_is_refused_before_zlib_runs() -> None:
    data = f.png_raw(50000, 50000, 8, 2, [])
    with pytest.raises(DecompressionBombError):
        decode(data)
