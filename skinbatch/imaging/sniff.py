"""Detect an image format from its first bytes; the file name is never consulted.

Formats we do not decode are still recognised, so the error can say what arrived and what to do.
"""

from __future__ import annotations

from .errors import EmptyInputError, UnsupportedFormatError

DICOM = "dicom"
JPEG = "jpeg"
PNG = "png"
WEBP = "webp"
TIFF = "tiff"
HEIF = "heif"
"""HEIF with HEVC (HEIC, what iPhones save) or another codec libheif reads; needs ``skinbatch[heic]``."""
AVIF = "avif"
SUPPORTED = (DICOM, JPEG, PNG, WEBP, TIFF, HEIF, AVIF)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (offset, magic, name) for formats we recognise but refuse.
_OTHER_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", TIFF),
    (0, b"MM\x00*", TIFF),
    (0, b"II+\x00", TIFF),
    (0, b"MM\x00+", TIFF),
    (0, b"BM", "BMP"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 (JP2)"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"%PDF", "PDF"),
    (0, b"PK\x03\x04", "ZIP archive"),
    (0, b"\x1f\x8b", "gzip archive"),
    (0, b"8BPS", "Photoshop PSD"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def detect(data: bytes) -> str | None:
    """Name of the format in ``data``: one of :data:`SUPPORTED`, another format's name, or ``None``."""
    head = bytes(data[:144])
    if len(head) >= 132 and head[128:132] == b"DICM":
        return DICOM
    if head[:3] == b"\xff\xd8\xff":
        return JPEG
    if head[:8] == _PNG_SIGNATURE:
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[4:8] == b"ftyp":
        return _iso_bmff_format(head)
    for offset, magic, name in _OTHER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if _looks_like_raw_dicom(head):
        return DICOM
    return None


def sniff(data: bytes) -> str:
    """Return one of :data:`SUPPORTED`, or raise a typed error that names what arrived."""
    if not data:
        raise EmptyInputError("the input is empty (0 bytes); check the producer sends the file body")
    fmt = detect(data)
    if fmt in SUPPORTED:
        return fmt
    if fmt is None:
        raise UnsupportedFormatError(
            f"unrecognised format (first bytes {bytes(data[:8]).hex(' ')}); "
            "send DICOM, JPEG, PNG, WebP, TIFF, HEIC/HEIF or AVIF"
        )
    raise UnsupportedFormatError(
        f"{fmt} is not supported; convert it to JPEG, PNG, WebP, TIFF, HEIC or AVIF (or send DICOM) before submitting",
        format=fmt,
    )


def _iso_bmff_format(head: bytes) -> str:
    """HEIF or AVIF from the ``ftyp`` box: the major brand, else the compatible brands (``mif1`` files list
    ``avif`` or ``heic`` there)."""
    size = int.from_bytes(head[0:4], "big")
    end = min(len(head), size if 16 <= size else 16)
    brands = [head[8:12], *(head[i : i + 4] for i in range(16, end - 3, 4))]
    if brands[0] in _AVIF_BRANDS:
        return AVIF
    if brands[0] in _HEIF_BRANDS:
        return AVIF if any(b in _AVIF_BRANDS for b in brands[1:]) and b"heic" not in brands[1:] else HEIF
    if any(b in _AVIF_BRANDS for b in brands[1:]):
        return AVIF
    if any(b in _HEIF_BRANDS for b in brands[1:]):
        return HEIF
    return "ISO media (MP4/MOV)"


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A data set without the 128-byte preamble and ``DICM`` (written by some older tools).

    Accept it only when the first element is a plausible group 0x0002 or 0x0008 tag with either an
    explicit VR or a small implicit length, so random bytes are not mistaken for DICOM."""
    if len(head) < 8:
        return False
    for order in ("little", "big"):
        group = int.from_bytes(head[0:2], order)
        element = int.from_bytes(head[2:4], order)
        if group not in (0x0002, 0x0008) or element > 0x0020:
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.isupper():
            return True
        if order == "little" and int.from_bytes(head[4:8], "little") < 0x100:
            return True
    return False
