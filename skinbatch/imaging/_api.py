"""Entry points: sniff the format, enforce the limits, dispatch to a decoder plugin, type every error."""

from __future__ import annotations

import logging

import numpy as np

from . import colour, sniff as _sniff
from .decoders import dicom, jpeg, pillow_formats, png
from .decoders.base import DecoderPlugin
from .errors import CorruptImageError, ImageDecodeError, InputTooLargeError
from .limits import DecodeLimits
from .preprocess import Preprocessing
from .result import DecodedImage

log = logging.getLogger("skinbatch.imaging")

PLUGINS: dict[str, DecoderPlugin] = {
    _sniff.DICOM: dicom.decode,
    _sniff.JPEG: jpeg.decode,
    _sniff.PNG: png.decode,
    _sniff.WEBP: pillow_formats.decode_webp,
    _sniff.TIFF: pillow_formats.decode_tiff,
    _sniff.HEIF: pillow_formats.decode_heif,
    _sniff.AVIF: pillow_formats.decode_avif,
}

_DEFAULT_LIMITS = DecodeLimits()


def decode(
    data: bytes | bytearray | memoryview,
    limits: DecodeLimits | None = None,
    target: Preprocessing | None = None,
) -> DecodedImage:
    """Decode DICOM, JPEG, PNG, WebP, TIFF, HEIF or AVIF bytes into RGB ``uint8`` frames.

    ``target``: the preprocessing the frames are for. When it allows (antialiased, not nearest), JPEG
    and JPEG-compressed DICOM frames are decoded at 1/2, 1/4 or 1/8 scale in the DCT domain, keeping
    the shorter side ≥ ``target.size``, so ``preprocess`` gives the same input within a grey level or
    two for a fraction of the work. PNG frames get an integer box reduction (Pillow ``reduce``) after
    decoding, for the same reason (WebP, TIFF, HEIF and AVIF too). ``DecodedImage.reduction`` says what
    was applied. Where ``target.color_management`` is on, frames with an embedded ICC profile are then
    converted to sRGB (on the reduced frames); ``DecodedImage.color`` says what was found and done.

    Raises :class:`~skinbatch.imaging.errors.ImageDecodeError` (never anything else) for bad input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode expects bytes, got {type(data).__name__}; read the file or message body first")
    limits = limits or _DEFAULT_LIMITS
    if len(data) > limits.max_bytes:
        raise InputTooLargeError(
            f"the input is {len(data)} bytes, over the limit of {limits.max_bytes}; "
            "raise DecodeLimits.max_bytes if such files are expected"
        )
    data = bytes(data)
    fmt = _sniff.sniff(data)
    min_side = target.size if target is not None and target.allows_reduced_decode else None
    try:
        decoded = PLUGINS[fmt](data, limits, min_side)
        return colour.manage(decoded, target is not None and target.color_management)
    except ImageDecodeError as exc:
        if exc.format is None:
            exc.format = fmt
        raise
    except RecursionError:
        raise CorruptImageError(f"the {fmt} nests too deeply to parse", format=fmt) from None
    except MemoryError:
        raise InputTooLargeError(
            f"ran out of memory decoding the {fmt}; lower DecodeLimits.max_pixels or give the worker more memory",
            format=fmt,
        ) from None
    except Exception as exc:
        # A decoder bug or an exotic failure: still a typed error, so the consumer dead-letters the
        # message instead of crashing. Only the exception type is logged (its text could, in theory,
        # quote a data element).
        log.warning("unexpected %s while decoding a %s; reported as corrupt", type(exc).__name__, fmt)
        raise CorruptImageError(f"the {fmt} could not be decoded ({type(exc).__name__})", format=fmt) from exc


def decode_image(data: bytes) -> list[np.ndarray]:
    """Full-resolution RGB ``uint8`` (H, W, 3) arrays, one per frame, with the default limits."""
    return decode(data).arrays
