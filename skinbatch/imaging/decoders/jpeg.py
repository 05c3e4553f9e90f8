"""JPEG (JFIF/EXIF, as phones and cameras write it) through Pillow's libjpeg-turbo.

With a target size, ``Image.draft`` makes libjpeg-turbo decode at 1/2, 1/4 or 1/8 scale in the DCT
domain: it skips most of the inverse DCT and the colour conversion of pixels that the resize would
average away anyway. The EXIF orientation is applied after decoding.

:func:`parse_header` is also used for JPEG frames inside DICOM: it reads the markers up to the first
scan, so sizes can be checked and the colour space decided before any decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image, ImageOps

from ..errors import CorruptImageError, TruncatedImageError, UnsupportedPixelFormatError
from ..limits import DecodeLimits
from ..result import DecodedImage
from .base import check_size, icc_profile, load_pillow, open_pillow, pillow_result

FORMAT = "jpeg"

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
"""Start-of-frame markers: the baseline/extended/progressive/lossless processes and JPEG-LS (0xF7)."""
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


@dataclass
class JpegHeader:
    width: int
    height: int
    precision: int
    components: int
    component_ids: list[int]
    sof_marker: int
    jfif: bool = False
    adobe_transform: int | None = None
    """Only set when the APP14 segment is long enough for libjpeg to honour it."""
    app_markers: list[int] = field(default_factory=list)

    @property
    def is_lossy_dct(self) -> bool:
        """Huffman or arithmetic DCT (baseline, extended, progressive): what libjpeg-turbo can scale."""
        return self.sof_marker in (0xC0, 0xC1, 0xC2, 0xC9, 0xCA)

    @property
    def libjpeg_sees_ycbcr(self) -> bool:
        """libjpeg's rule (jdapimin.c) for whether 3 components are YCbCr and get converted to RGB."""
        if self.components != 3:
            return False
        if self.jfif:
            return True
        if self.adobe_transform is not None:
            return self.adobe_transform != 0
        return self.component_ids != [82, 71, 66]


def parse_header(data: bytes | memoryview, fmt: str = FORMAT) -> JpegHeader:
    """Read the markers of a JPEG / JPEG-LS codestream up to its first scan."""
    buf = memoryview(data)
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise CorruptImageError(f"the {fmt} codestream does not start with a JPEG SOI marker", format=fmt)
    i = 2
    jfif = False
    adobe: int | None = None
    apps: list[int] = []
    sof: JpegHeader | None = None
    while True:
        # Skip fill bytes and find the next marker.
        while i < n and buf[i] != 0xFF:
            i += 1
        while i < n and buf[i] == 0xFF:
            i += 1
        if i >= n:
            break
        marker = buf[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9:  # EOI before a scan
            break
        if i + 2 > n:
            break
        length = (buf[i] << 8) | buf[i + 1]
        if length < 2:
            raise CorruptImageError(f"the {fmt} has a marker segment of impossible length {length}", format=fmt)
        seg = buf[i + 2 : i + length]
        if len(seg) < length - 2:
            break
        if marker == 0xE0 and bytes(seg[:5]) == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE and bytes(seg[:5]) == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        if 0xE0 <= marker <= 0xEF:
            apps.append(marker)
        if marker in _SOF_MARKERS and sof is None:
            if len(seg) < 6:
                raise CorruptImageError(f"the {fmt} start-of-frame segment is too short", format=fmt)
            ncomp = seg[5]
            if len(seg) < 6 + 3 * ncomp:
                raise CorruptImageError(f"the {fmt} start-of-frame segment is too short", format=fmt)
            sof = JpegHeader(
                width=(seg[3] << 8) | seg[4],
                height=(seg[1] << 8) | seg[2],
                precision=seg[0],
                components=ncomp,
                component_ids=[seg[6 + 3 * k] for k in range(ncomp)],
                sof_marker=marker,
            )
        if marker == 0xDA:  # start of scan: libjpeg stops reading the header here
            if sof is None:
                raise CorruptImageError(f"the {fmt} has a scan before its start-of-frame marker", format=fmt)
            sof.jfif, sof.adobe_transform, sof.app_markers = jfif, adobe, apps
            return sof
        i += length
    raise TruncatedImageError(
        f"the {fmt} ends before its first scan (no complete header); re-send the complete file", format=fmt
    )


def decode(data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    header = parse_header(data)
    if header.height == 0:
        raise UnsupportedPixelFormatError(
            "the JPEG declares its height in a later DNL marker, which is not supported", format=FORMAT
        )
    check_size(header.width, header.height, 1, limits, fmt=FORMAT)
    if not header.is_lossy_dct:
        raise UnsupportedPixelFormatError(
            f"lossless / JPEG-LS photos (marker 0x{header.sof_marker:02X}) are not supported outside DICOM; "
            "export 8-bit JPEG or PNG",
            format=FORMAT,
        )
    if header.precision != 8:
        raise UnsupportedPixelFormatError(
            f"{header.precision}-bit JPEG photos are not supported (Pillow decodes 8-bit JPEG only); "
            "export 8-bit JPEG or PNG",
            format=FORMAT,
        )
    im = open_pillow(data, ("JPEG",), FORMAT)
    try:
        orientation = _orientation(im)
        reduction = 1
        if min_side:
            full_w = im.size[0]
            im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else "RGB", (min_side, min_side))
            reduction = max(1, round(full_w / im.size[0]))
        load_pillow(im, FORMAT)
        icc = icc_profile(im)
        source_size = (header.height, header.width)
        if orientation in (5, 6, 7, 8):
            source_size = (header.width, header.height)
        if orientation and orientation != 1:
            im = ImageOps.exif_transpose(im)
        return pillow_result(im, fmt=FORMAT, source_size=source_size, reduction=reduction,
                             decoder="pillow-draft" if reduction > 1 else "pillow", icc=icc,
                             exif_orientation=orientation)
    finally:
        im.close()


def _orientation(im: Image.Image) -> int | None:
    # A broken EXIF block must not cost the image; the photo is still usable unrotated.
    try:
        value = im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - see above
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None
