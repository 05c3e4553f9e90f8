"""What the decoder plugins share: size checks, sample scaling, Pillow error mapping, box reduction and
the one-frame result of a Pillow photo decode.

Each plugin module (``dicom``, ``jpeg``, ``png``) exposes ``decode(data, limits, min_side)``. ``min_side``
is ``None`` for a full-resolution decode; otherwise the plugin may decode at 1/2, 1/4 or 1/8 scale in
the DCT domain as long as the shorter side stays at least ``min_side``.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageDecodeError,
    TruncatedImageError,
    UnsupportedPixelFormatError,
)
from ..limits import DecodeLimits
from ..result import DecodedImage, Frame

REDUCTIONS = (8, 4, 2, 1)
"""DCT-domain scale denominators that Pillow's JPEG ``draft`` offers."""
BOX_REDUCIBLE = ("RGB", "RGBA", "L", "LA")
"""Pillow modes that ``Image.reduce`` takes."""


class DecoderPlugin(Protocol):
    def __call__(self, data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage: ...


def check_size(
    width: int, height: int, frames: int, limits: DecodeLimits, *, fmt: str, what: str | None = None
) -> None:
    """Refuse a decompression bomb from the sizes in the headers, before any pixel is decoded.

    ``what`` names the header in messages (default: "the <fmt> header")."""
    src = what or f"the {fmt} header"
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"{src} declares an empty image ({width}×{height})", format=fmt)
    if frames <= 0:
        raise CorruptImageError(f"the {fmt} data declares {frames} frames", format=fmt)
    pixels = width * height
    if pixels > limits.max_pixels:
        raise DecompressionBombError(
            f"{src} declares {width}×{height} = {pixels / 1e6:.1f} MP per frame, over the limit of "
            f"{limits.max_pixels / 1e6:.1f} MP; if this is a real image, raise DecodeLimits.max_pixels",
            format=fmt,
        )
    if frames > limits.max_frames:
        raise DecompressionBombError(
            f"the {fmt} data declares {frames} frames, over the limit of {limits.max_frames}; "
            "raise DecodeLimits.max_frames if this is a real multi-frame image",
            format=fmt,
        )
    if pixels * frames > limits.max_total_pixels:
        raise DecompressionBombError(
            f"the {fmt} data declares {frames} frames of {width}×{height}, {pixels * frames / 1e6:.1f} MP in all, "
            f"over the limit of {limits.max_total_pixels / 1e6:.1f} MP; raise DecodeLimits.max_total_pixels "
            "if this is a real image",
            format=fmt,
        )


def choose_reduction(width: int, height: int, min_side: int | None) -> int:
    """Largest DCT reduction whose output keeps the shorter side ≥ ``min_side``."""
    if not min_side:
        return 1
    for r in REDUCTIONS:
        if min(-(-width // r), -(-height // r)) >= min_side and min(width, height) // r >= min_side:
            return r
    return 1


def scale_to_uint8(arr: np.ndarray, bits_stored: int, signed: bool = False) -> np.ndarray:
    """Map samples linearly from their stored range to 0..255.

    Unsigned: [0, 2^bits − 1] → [0, 255]. Signed: [−2^(bits−1), 2^(bits−1) − 1] → [0, 255], i.e. the
    same line after an offset. Values outside the stored range (stray high bits) are clipped.
    """
    if arr.dtype == np.uint8 and bits_stored == 8 and not signed:
        return arr
    if not 1 <= bits_stored <= 32:
        raise UnsupportedPixelFormatError(f"Bits Stored {bits_stored} is outside 1..32")
    if arr.dtype.kind not in "ui":
        raise UnsupportedPixelFormatError(
            f"{arr.dtype} samples are not supported; only integer pixel data is turned into RGB"
        )
    maxv = (1 << bits_stored) - 1
    if bits_stored <= 16:
        # Exact integer rounding; int64 keeps v*255 from overflowing.
        v = arr.astype(np.int64)
        if signed:
            v += 1 << (bits_stored - 1)
        np.clip(v, 0, maxv, out=v)
        return ((v * 255 + maxv // 2) // maxv).astype(np.uint8)
    f = arr.astype(np.float64)
    if signed:
        f += float(1 << (bits_stored - 1))
    np.clip(f, 0, maxv, out=f)
    return np.rint(f * (255.0 / maxv)).astype(np.uint8)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Flatten transparency the way an image viewer shows it, so the model sees what a person saw."""
    a = alpha.astype(np.uint16)[:, :, None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def pil_to_rgb(im: Image.Image) -> tuple[np.ndarray, bool, bool]:
    """A loaded Pillow image as (RGB uint8 array, monochrome, had_alpha)."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy(), False, False
    if mode in ("L", "1"):
        return grey_to_rgb(np.asarray(im.convert("L"), dtype=np.uint8)), True, False
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return grey_to_rgb(scale_to_uint8(np.asarray(im).astype(np.uint16), 16)), True, False
    if mode == "I":
        # 16-bit grey PNGs load as 32-bit "I" in some Pillow versions; their samples fit in 16 bits.
        return grey_to_rgb(scale_to_uint8(np.asarray(im).astype(np.int64).clip(0, 65535), 16)), True, False
    if mode == "LA" or (mode == "P" and _palette_is_grey(im) and "transparency" in im.info):
        la = np.asarray(im.convert("LA"), dtype=np.uint8)
        return grey_to_rgb(composite_on_white(la[:, :, :1], la[:, :, 1])[:, :, 0]), True, True
    if mode in ("RGBA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return composite_on_white(rgba[:, :, :3], rgba[:, :, 3]), False, True
    if mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), False, False
    raise UnsupportedPixelFormatError(f"Pillow image mode {mode!r} is not supported; save the image as 8-bit RGB")


def _palette_is_grey(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def open_pillow(data: bytes, formats: Iterable[str], fmt: str) -> Image.Image:
    """``Image.open`` (reads headers only), with every failure turned into a typed error."""
    try:
        return Image.open(io.BytesIO(data), formats=list(formats))
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(
            f"Pillow refused the {fmt} as a decompression bomb ({exc}); raise Image.MAX_IMAGE_PIXELS "
            "together with DecodeLimits.max_pixels if this is a real image",
            format=fmt,
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of Pillow on these bytes is bad input
        raise pillow_error(exc, fmt, "reading the header") from None


def load_pillow(im: Image.Image, fmt: str) -> None:
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001 - any failure of Pillow on these bytes is bad input
        raise pillow_error(exc, fmt, "decoding the pixels") from None


def box_reduction(im: Image.Image, min_side: int | None) -> int:
    """The integer box reduction (at most 8) that keeps the shorter side ≥ ``min_side``, for the formats
    that offer no DCT-domain scaling; 1 when there is no target, it would not halve, or the mode cannot
    be reduced. Shrinking to "just large enough" keeps every later copy (RGB conversion, preprocess)
    small; the antialiased resize would average these pixels anyway."""
    if not min_side or im.mode not in BOX_REDUCIBLE:
        return 1
    factor = min(im.size) // min_side
    return min(8, factor) if factor >= 2 else 1


def reduce_pillow(im: Image.Image, reduction: int, fmt: str) -> Image.Image:
    """``im.reduce(reduction)`` (``im`` itself for 1), with a failure turned into a typed error."""
    if reduction <= 1:
        return im
    try:
        return im.reduce(reduction)
    except Exception as exc:  # noqa: BLE001 - any failure of Pillow on these bytes is bad input
        raise pillow_error(exc, fmt, "reducing the image") from None


def icc_profile(im: Image.Image) -> bytes | None:
    """The embedded ICC profile of an opened Pillow image, if any."""
    icc = im.info.get("icc_profile") or None
    return bytes(icc) if isinstance(icc, (bytes, bytearray)) else None


def pillow_result(
    im: Image.Image,
    *,
    fmt: str,
    source_size: tuple[int, int],
    reduction: int,
    decoder: str,
    icc: bytes | None,
    exif_orientation: int | None = None,
) -> DecodedImage:
    """A loaded single-image Pillow decode (a photo) as its one RGB frame."""
    arr, mono, alpha = pil_to_rgb(im)
    return DecodedImage(
        format=fmt,
        frames=(Frame(arr, 1),),
        monochrome=mono,
        source_size=source_size,
        reduction=reduction,
        decoder=decoder,
        exif_orientation=exif_orientation,
        had_alpha=alpha,
        icc_profile=icc,
    )


_TRUNCATION_HINTS = ("truncated", "premature end", "unexpected end", "not enough data", "eof")


def pillow_error(exc: BaseException, fmt: str, stage: str) -> ImageDecodeError:
    if isinstance(exc, ImageDecodeError):
        return exc
    if isinstance(exc, MemoryError):
        return DecompressionBombError(f"ran out of memory while {stage} the {fmt}", format=fmt)
    text = str(exc)
    low = text.lower()
    if isinstance(exc, EOFError) or any(h in low for h in _TRUNCATION_HINTS):
        return TruncatedImageError(
            f"the {fmt} is truncated ({stage}: {text[:160]}); re-send the complete file", format=fmt
        )
    if isinstance(exc, UnidentifiedImageError):
        return CorruptImageError(f"the {fmt} signature is present but the header is unreadable", format=fmt)
    if isinstance(exc, (OSError, SyntaxError, ValueError, struct.error, zlib.error, IndexError, KeyError, TypeError)):
        return CorruptImageError(f"the {fmt} is corrupt ({stage}: {type(exc).__name__}: {text[:160]})", format=fmt)
    return CorruptImageError(f"the {fmt} could not be decoded ({stage}: {type(exc).__name__})", format=fmt)
