"""JPEG: colour, EXIF orientation, DCT-domain downscaling, typed failures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from skinbatch.imaging import (
    DecodeLimits,
    DecompressionBombError,
    InputTooLargeError,
    Preprocessing,
    TruncatedImageError,
    decode,
    decode_image,
    preprocess,
)
from skinbatch.imaging.decoders.jpeg import parse_header

from . import _factories as f

pytestmark = pytest.mark.timeout(30)


def test_rgb_jpeg_decodes_close_to_the_source() -> None:
    arr = f.photo(160, 120)
    (out,) = decode_image(f.jpeg(arr, quality=95))
    assert out.shape == (120, 160, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert f.mad(out, arr) < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    arr = f.asymmetric()
    data = f.jpeg(arr, quality=100, orientation=orientation, subsampling="4:4:4")
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    img = decode(data)
    assert img.exif_orientation == orientation
    assert img.arrays[0].shape == expected.shape
    assert f.mad(img.arrays[0], expected) < 1
    if orientation in (5, 6, 7, 8):
        assert img.arrays[0].shape[:2] == (48, 32) and img.source_size == (48, 32)


def test_orientation_survives_dct_downscaling() -> None:
    arr = f.photo(800, 600)
    data = f.jpeg(arr, orientation=6)
    p = Preprocessing(size=64)
    img = decode(data, target=p)
    assert img.reduction == 8 and img.arrays[0].shape == (100, 75, 3)
    full = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert f.mad(preprocess(img.arrays[0], p), preprocess(np.ascontiguousarray(full), p)) <= 2


def test_grey_jpeg_is_replicated_and_flagged() -> None:
    grey = f.photo(40, 30)[:, :, 0]
    img = decode(f.jpeg(grey))
    assert img.monochrome
    out = img.arrays[0]
    assert out.shape == (30, 40, 3)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()


def test_cmyk_jpeg_becomes_rgb() -> None:
    buf = io.BytesIO()
    Image.fromarray(f.photo(32, 24)).convert("CMYK").save(buf, "JPEG", quality=95)
    (out,) = decode_image(buf.getvalue())
    assert out.shape == (24, 32, 3)


@pytest.mark.parametrize("size", [64, 100, 299])
def test_dct_downscaling_keeps_the_shorter_side_and_the_result(size: int) -> None:
    arr = f.photo(1200, 900, seed=3)
    data = f.jpeg(arr, quality=92)
    p = Preprocessing(size=size)
    img = decode(data, target=p)
    assert min(img.arrays[0].shape[:2]) >= size
    assert img.reduction == {64: 8, 100: 8, 299: 2}[size]
    assert img.decoder == "pillow-draft"
    assert f.mad(preprocess(img.arrays[0], p), preprocess(decode_image(data)[0], p)) <= 2


@pytest.mark.parametrize("p", [Preprocessing(size=64, antialias=False),
                               Preprocessing(size=64, interpolation="nearest")])
def test_no_downscaling_when_the_resize_samples_pixels(p: Preprocessing) -> None:
    img = decode(f.jpeg(f.photo(640, 480)), target=p)
    assert img.reduction == 1 and img.arrays[0].shape == (480, 640, 3)


def test_header_parser_reads_sof_and_colour_markers() -> None:
    h = parse_header(f.jpeg(f.photo(33, 17)))
    assert (h.width, h.height, h.precision, h.components) == (33, 17, 8, 3)
    assert h.jfif and h.libjpeg_sees_ycbcr and h.is_lossy_dct


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.95])
def test_truncated_jpeg_is_a_typed_error(keep: float) -> None:
    data = f.jpeg(f.photo(200, 150))
    with pytest.raises(TruncatedImageError) as info:
        decode(data[: int(len(data) * keep)])
    assert info.value.type == "truncated" and info.value.format == "jpeg"


def test_header_only_is_truncated() -> None:
    data = f.jpeg(f.photo(20, 20))
    with pytest.raises(TruncatedImageError):
        decode(data[:40])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    data = bytearray(f.jpeg(f.photo(16, 16)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    with pytest.raises(DecompressionBombError, match="3600.0 MP"):
        decode(bytes(data))


def test_pixel_limit_is_configurable() -> None:
    data = f.jpeg(f.photo(100, 100))
    with pytest.raises(DecompressionBombError) as info:
        decode(data, DecodeLimits(max_pixels=5000))
    assert info.value.type == "decompression_bomb"


def test_byte_limit() -> None:
    data = f.jpeg(f.photo(100, 100))
    with pytest.raises(InputTooLargeError) as info:
        decode(data, DecodeLimits(max_bytes=100))
    assert info.value.to_dict()["type"] == "too_large"
