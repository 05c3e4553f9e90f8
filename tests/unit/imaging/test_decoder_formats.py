"""WebP, TIFF, AVIF and HEIC/HEIF, from files that third-party encoders wrote (cwebp, raw2tiff/tiffcp,
avifenc, heif-enc), never Pillow: each decodes within 3 grey levels (mean |d|) of the original."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from skinbatch.imaging import DecodeLimits, DecompressionBombError, Preprocessing, decode, preprocess
from skinbatch.imaging.decoders import pillow_formats
from skinbatch.imaging.errors import FormatNeedsExtraError
from tests.fixtures.icc import require_tool
from tests.fixtures.needs import need_module

from . import _factories as f

pytestmark = pytest.mark.timeout(120)

WIDTH, HEIGHT = 640, 480


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("formats")
    arr = f.photo(WIDTH, HEIGHT, seed=3)
    Image.fromarray(arr).save(folder / "orig.png")
    arr.tofile(folder / "rgb8.raw")
    (arr.astype("<u2") * 257).tofile(folder / "rgb16.raw")
    return folder, arr


def _encode(kind: str, folder: Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    src, out = folder / "orig.png", folder / f"{kind}.out"
    if kind == "heif":
        _run(require_tool("heif-enc", "libheif-examples"), "-q", "95", "-o", out, src)
    elif kind == "webp":
        _run(require_tool("cwebp", "webp"), "-q", "95", src, "-o", out)
    elif kind == "avif":
        # Quantizer 0..6 of 63: quality 90 and better.
        _run(require_tool("avifenc", "libavif-bin"), "--min", "0", "--max", "6", "-s", "8", src, out)
    elif kind == "tiff8":
        _run(require_tool("raw2tiff", "libtiff-tools"), "-M", "-w", width, "-l", height, "-b", "3", "-p", "rgb",
             "-c", "lzw", folder / "rgb8.raw", out)
    elif kind == "tiff16":
        # 16-bit samples (raw2tiff), then deflate-compressed by tiffcp, as a scanner or camera raw export would be.
        plain = folder / "rgb16-plain.tif"
        _run(require_tool("raw2tiff", "libtiff-tools"), "-M", "-w", width, "-l", height, "-b", "3", "-p", "rgb",
             "-d", "short", folder / "rgb16.raw", plain)
        _run(require_tool("tiffcp", "libtiff-tools"), "-c", "zip", plain, out)
    else:
        raise AssertionError(kind)
    return out


@pytest.mark.parametrize(("kind", "fmt"), [("heif", "heif"), ("webp", "webp"), ("avif", "avif"),
                                           ("tiff8", "tiff"), ("tiff16", "tiff")])
def test_third_party_files_decode_within_3_grey_levels(made, kind: str, fmt: str) -> None:
    folder, arr = made
    data = _encode(kind, folder).read_bytes()
    img = decode(data)
    assert img.format == fmt
    assert len(img.frames) == 1 and img.reduction == 1
    assert img.source_size == (HEIGHT, WIDTH)
    px = img.frames[0].pixels
    assert px.shape == (HEIGHT, WIDTH, 3) and px.dtype == np.uint8
    assert f.mad(px, arr) < 3.0


@pytest.mark.parametrize("kind", ["heif", "webp", "avif", "tiff8"])
def test_the_pixel_limit_is_checked_from_the_header(made, kind: str) -> None:
    folder, _ = made
    data = _encode(kind, folder).read_bytes()
    with pytest.raises(DecompressionBombError, match="MP per frame"):
        decode(data, limits=DecodeLimits(max_pixels=WIDTH * HEIGHT - 1))


def test_grey_16_bit_tiff_is_rescaled(tmp_path: Path) -> None:
    grey = (np.linspace(0, 65535, 300 * 200).reshape(200, 300)).astype("<u2")
    grey.tofile(tmp_path / "g.raw")
    _run(require_tool("raw2tiff", "libtiff-tools"), "-M", "-w", 300, "-l", 200, "-d", "short", "-p", "minisblack",
         tmp_path / "g.raw", tmp_path / "g.tif")
    img = decode((tmp_path / "g.tif").read_bytes())
    assert img.monochrome
    expected = np.rint(grey / 257.0).astype(np.uint8)
    assert f.mad(img.frames[0].pixels[:, :, 0], expected) < 1.0


def test_a_multi_page_tiff_gives_its_first_page(made, tmp_path: Path) -> None:
    folder, arr = made
    first = _encode("tiff8", folder)
    other = f.photo(WIDTH, HEIGHT, seed=9)
    other.tofile(tmp_path / "other.raw")
    _run(require_tool("raw2tiff", "libtiff-tools"), "-M", "-w", WIDTH, "-l", HEIGHT, "-b", "3", "-p", "rgb",
         tmp_path / "other.raw", tmp_path / "other.tif")
    _run(require_tool("tiffcp", "libtiff-tools"), first, tmp_path / "other.tif", tmp_path / "both.tif")
    img = decode((tmp_path / "both.tif").read_bytes())
    assert len(img.frames) == 1
    assert f.mad(img.frames[0].pixels, arr) < 1.0


@pytest.mark.parametrize("kind", ["heif", "webp", "avif", "tiff8"])
def test_reduced_decoding_gives_the_same_model_input(tmp_path: Path, kind: str) -> None:
    arr = f.photo(1400, 1000, seed=5)
    Image.fromarray(arr).save(tmp_path / "orig.png")
    arr.tofile(tmp_path / "rgb8.raw")
    data = _encode(kind, tmp_path, 1400, 1000).read_bytes()
    p = Preprocessing()
    reduced = decode(data, target=p)
    full = decode(data)
    assert reduced.reduction == 3 and reduced.decoder.endswith("-reduce")
    assert reduced.source_size == (1000, 1400)
    assert f.mad(preprocess(reduced.frames[0].pixels, p), preprocess(full.frames[0].pixels, p)) < 2.0


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A JPEG stored landscape with EXIF orientation 6 (shown portrait), and how it looks upright."""
    folder = tmp_path_factory.mktemp("rotated")
    (folder / "rot.jpg").write_bytes(f.jpeg(f.asymmetric(480, 320), quality=98, orientation=6))
    with Image.open(folder / "rot.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert upright.shape == (480, 320, 3)
    return folder, upright


def _upright_once(data: bytes, upright: np.ndarray) -> None:
    img = decode(data)
    px = img.frames[0].pixels
    assert px.shape == upright.shape, f"{px.shape}: not turned, or turned twice"
    assert f.mad(px, upright) < 3.0
    # Turned the other way (or mirrored) would be far off: the test can tell.
    assert f.mad(np.ascontiguousarray(np.rot90(px, 2)), upright) > 20
    assert img.exif_orientation == 6 and img.source_size == (480, 320)


def test_heif_enc_from_an_exif_rotated_jpeg_comes_out_upright_once(rotated) -> None:
    # heif-enc before libheif 1.16 copies the EXIF orientation and writes no irot: it is applied here.
    folder, upright = rotated
    out = folder / "heif-enc.heic"
    _run(require_tool("heif-enc", "libheif-examples"), "-q", "95", "-o", out, folder / "rot.jpg")
    _upright_once(out.read_bytes(), upright)


def test_a_heif_with_irot_and_exif_orientation_is_turned_once(rotated) -> None:
    # What phones write: irot (applied by libheif) and the same rotation in EXIF (which must be ignored).
    pillow_heif = need_module("pillow_heif", "the heic extra: pip install 'skinbatch[heic]'")
    folder, upright = rotated
    pillow_heif.register_heif_opener()
    out = folder / "irot.heic"
    with Image.open(folder / "rot.jpg") as im:  # pillow-heif's encoder (libheif, x265) writes irot from EXIF
        im.save(out, format="HEIF", quality=95, exif=im.info["exif"])
    data = out.read_bytes()
    assert pillow_formats.heif_has_transformations(data)
    _upright_once(data, upright)


def test_avifenc_from_an_exif_rotated_jpeg_comes_out_upright_once(rotated) -> None:
    # avifenc turns the EXIF orientation into irot; Pillow reports it as the EXIF orientation.
    folder, upright = rotated
    out = folder / "rot.avif"
    _run(require_tool("avifenc", "libavif-bin"), "--min", "0", "--max", "6", "-s", "8", folder / "rot.jpg", out)
    _upright_once(out.read_bytes(), upright)


def test_cwebp_keeps_the_exif_orientation_and_it_is_applied(rotated) -> None:
    folder, upright = rotated
    out = folder / "rot.webp"
    _run(require_tool("cwebp", "webp"), "-q", "95", "-metadata", "exif", folder / "rot.jpg", "-o", out)
    _upright_once(out.read_bytes(), upright)


def test_heif_without_the_extra_names_the_extra(made, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = made
    data = _encode("heif", folder).read_bytes()
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    monkeypatch.setattr(pillow_formats, "_heif_registered", False)
    with pytest.raises(FormatNeedsExtraError) as info:
        decode(data)
    assert info.value.type == "format_needs_extra"
    assert info.value.to_dict()["extra"] == "heic" and "skinbatch[heic]" in str(info.value)
    assert info.value.format == "heif"
