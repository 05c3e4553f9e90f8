"""PNG through Pillow: 1/2/4/8/16-bit grey, RGB(A), palette (with tRNS), grey+alpha.

Transparency is composited onto white; 16-bit samples become 8-bit (Pillow keeps the high byte of
16-bit RGB; 16-bit grey is rescaled by 255/65535). Only the default image of an APNG is decoded.
"""

from __future__ import annotations

from ..errors import CorruptImageError, TruncatedImageError
from ..limits import DecodeLimits
from ..result import DecodedImage, Frame
from .base import check_size, load_pillow, open_pillow, pil_to_rgb, pillow_error

FORMAT = "png"
_REDUCIBLE = ("RGB", "RGBA", "L", "LA")


def decode(data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    # IHDR is the first chunk by the standard; reading it here refuses a bomb before zlib runs.
    if len(data) < 33:
        raise TruncatedImageError("the PNG ends inside its IHDR header; re-send the complete file", format=FORMAT)
    if data[12:16] != b"IHDR":
        raise CorruptImageError("the PNG does not start with an IHDR chunk", format=FORMAT)
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    check_size(width, height, 1, limits, fmt=FORMAT)
    im = open_pillow(data, ("PNG",), FORMAT)
    try:
        load_pillow(im, FORMAT)
        icc = im.info.get("icc_profile") or None
        reduction = 1
        if min_side and min(width, height) // min_side >= 2 and im.mode in _REDUCIBLE:
            # No DCT for PNG, but a box reduction to "just large enough" keeps every later copy
            # (RGB conversion, preprocess) small; the antialiased resize would average these pixels anyway.
            reduction = min(8, min(width, height) // min_side)
            try:
                im = im.reduce(reduction)
            except Exception as exc:  # noqa: BLE001 - any failure of Pillow on these bytes is bad input
                raise pillow_error(exc, FORMAT, "reducing the image") from None
        arr, mono, alpha = pil_to_rgb(im)
    finally:
        im.close()
    return DecodedImage(
        format=FORMAT,
        frames=(Frame(arr, 1),),
        monochrome=mono,
        source_size=(height, width),
        reduction=reduction,
        decoder="pillow-reduce" if reduction > 1 else "pillow",
        had_alpha=alpha,
        icc_profile=bytes(icc) if isinstance(icc, (bytes, bytearray)) else None,
    )
