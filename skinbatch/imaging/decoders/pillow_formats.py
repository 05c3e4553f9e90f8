"""WebP, TIFF, AVIF (Pillow) and HEIC/HEIF (pillow-heif, the optional ``skinbatch[heic]`` extra).

One decode path for all four: ``Image.open`` reads the header only, so the declared size is checked
against the limits before a pixel is decoded; then the first image is decoded (TIFF: the first page;
WebP and AVIF: the first frame of an animation; HEIF: the primary image), oriented, and, with a target
size, shrunk by an integer box reduction (Pillow ``reduce``) to "just large enough". None of these
formats offers DCT-domain scaling through Pillow the way JPEG does, so the reduction follows the decode.

Orientation: WebP, TIFF and AVIF keep it as EXIF (Pillow's AVIF plugin turns ``irot``/``imir`` into
the EXIF orientation), which is applied here. HEIF's own rotation and mirroring (``irot``/``imir``) are
applied by libheif while decoding, and the HEIF standard says a reader ignores the EXIF orientation then;
phones write both, so applying the EXIF value as well would turn the photo twice. Only a HEIF without
``irot``/``imir`` (older encoders, such as heif-enc before libheif 1.16, copy a JPEG's EXIF orientation
and nothing else) gets its EXIF orientation applied here. pillow-heif resets the EXIF orientation to 1
and keeps the value it found, which is reported as ``exif_orientation``.
"""

from __future__ import annotations

import threading

from PIL import Image, ImageOps

from ..errors import FormatNeedsExtraError, UnsupportedPixelFormatError
from ..limits import DecodeLimits
from ..result import DecodedImage
from .base import box_reduction, check_size, icc_profile, load_pillow, open_pillow, pillow_result, reduce_pillow

HEIC_EXTRA = "heic"
_PILLOW_FORMATS = {"webp": "WEBP", "tiff": "TIFF", "avif": "AVIF", "heif": "HEIF"}
_heif_lock = threading.Lock()
_heif_registered = False


def decode_webp(data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    return _decode(data, "webp", limits, min_side)


def decode_tiff(data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    return _decode(data, "tiff", limits, min_side)


def decode_avif(data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    return _decode(data, "avif", limits, min_side)


def decode_heif(data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    register_heif()
    return _decode(data, "heif", limits, min_side)


def heif_available() -> bool:
    """Whether pillow-heif (the ``heic`` extra) is installed."""
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def register_heif() -> None:
    """Teach Pillow to open HEIF through pillow-heif, once per process, or say which extra is missing."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if _heif_registered:
            return
        try:
            import pillow_heif
        except ImportError:
            raise FormatNeedsExtraError(
                "HEIC/HEIF needs the optional package pillow-heif, which this install lacks; install "
                f"skinbatch[{HEIC_EXTRA}] (see docs/formats.md for its licences), or convert the photo to JPEG",
                extra=HEIC_EXTRA,
                format="heif",
            ) from None
        # Thumbnails are separately encoded images; never let draft() swap one in for the real photo.
        pillow_heif.register_heif_opener(thumbnails=False)
        _heif_registered = True


def _decode(data: bytes, fmt: str, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    im = open_pillow(data, (_PILLOW_FORMATS[fmt],), fmt)
    try:
        width, height = im.size
        check_size(width, height, 1, limits, fmt=fmt)
        _check_mode(im, fmt)
        load_pillow(im, fmt)
        orientation = _orientation(im, fmt)
        icc = icc_profile(im)
        if orientation and orientation != 1:
            if fmt != "heif":
                im = ImageOps.exif_transpose(im)
            elif not heif_has_transformations(data):
                im = im.transpose(_TRANSPOSE[orientation])
        oriented = (im.size[1], im.size[0])
        reduction = box_reduction(im, min_side)
        im = reduce_pillow(im, reduction, fmt)
        return pillow_result(
            im, fmt=fmt, source_size=oriented, reduction=reduction,
            decoder=("pillow-heif" if fmt == "heif" else "pillow") + ("-reduce" if reduction > 1 else ""),
            icc=icc, exif_orientation=orientation,
        )
    finally:
        im.close()


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation → the transposition that makes the image upright (as ``ImageOps.exif_transpose``)."""


def heif_has_transformations(data: bytes) -> bool:
    """Whether the HEIF declares ``irot`` or ``imir`` item properties (meta → iprp → ipco), which libheif
    applies while decoding."""
    meta = _child_box(data, 0, len(data), b"meta")
    if meta is None:
        return False
    iprp = _child_box(data, meta[0] + 4, meta[1], b"iprp")  # meta is a full box: 4 bytes version/flags
    ipco = _child_box(data, iprp[0], iprp[1], b"ipco") if iprp else None
    if ipco is None:
        return False
    return any(kind in (b"irot", b"imir") for kind, _, _ in _boxes(data, ipco[0], ipco[1]))


def _child_box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, body, stop in _boxes(data, start, end):
        if found == kind:
            return body, stop
    return None


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, body start, end) of the ISO BMFF boxes in ``data[start:end]``; stops at a malformed one."""
    out: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and len(out) < 4096:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        out.append((kind, pos + header, pos + size))
        pos += size
    return out


def _check_mode(im: Image.Image, fmt: str) -> None:
    if im.mode in ("F", "I;32", "I;32B", "I;32L") or im.mode.startswith("F;"):
        raise UnsupportedPixelFormatError(
            f"the {fmt} holds {im.mode} samples (floating point or 32-bit), not a photograph; save it as 8- or 16-bit",
            format=fmt,
        )


def _orientation(im: Image.Image, fmt: str) -> int | None:
    """The EXIF orientation (1–8) as found; for HEIF the one libheif applied (pillow-heif keeps it aside)."""
    if fmt == "heif":
        value = im.info.get("original_orientation")
    else:
        try:
            value = im.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the image
            return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None
