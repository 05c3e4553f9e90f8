"""PNG through Pillow: 1/2/4/8/16-bit grey, RGB(A), palette (with tRNS), grey+alpha.

Transparency is composited onto white; 16-bit samples become 8-bit (Pillow keeps the high byte of
16-bit RGB; 16-bit grey is rescaled by 255/65535). Only the default image of an APNG is decoded.
"""

from __future__ import annotations

from ..errors import CorruptImageError, TruncatedImageError
from ..limits import DecodeLimits
from ..result import DecodedImage
from .base import box_reduction, check_size, icc_profile, load_pillow, open_pillow, pillow_result, reduce_pillow

FORMAT = "png"


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
        icc = icc_profile(im)
        # No DCT for PNG, but a box reduction still keeps the later copies small.
        reduction = box_reduction(im, min_side)
        im = reduce_pillow(im, reduction, FORMAT)
        return pillow_result(im, fmt=FORMAT, source_size=(height, width), reduction=reduction,
                             decoder="pillow-reduce" if reduction > 1 else "pillow", icc=icc)
    finally:
        im.close()
