"""DICOM (PS3.10 files, or bare data sets) through pydicom 3 and its pixel-data plugins.

Transfer syntaxes (PS3.5 §8, Annex A) and who decodes them here:

* Implicit VR LE ``1.2.840.10008.1.2``, Explicit VR LE ``…1.2.1``, Explicit VR BE ``…1.2.2`` and
  Deflated Explicit VR LE ``…1.2.1.99``: pydicom's native decoder.
* JPEG Baseline ``…1.2.4.50`` and 8-bit JPEG Extended ``…1.2.4.51``: Pillow (libjpeg-turbo), frame by
  frame, so a target size can use DCT-domain scaling. 12-bit JPEG Extended goes to pydicom + pylibjpeg.
* JPEG Lossless ``…1.2.4.57`` / ``…1.2.4.70``, JPEG-LS ``…1.2.4.80`` / ``…1.2.4.81``, JPEG 2000
  ``…1.2.4.90`` / ``…1.2.4.91``, HTJ2K ``…1.2.4.201-203`` and RLE ``…1.2.5``: pydicom, which picks an
  installed plugin (pylibjpeg-libjpeg, pylibjpeg-openjpeg, Pillow, pylibjpeg-rle or its own RLE).

Colour: RGB, YBR_FULL, YBR_FULL_422, YBR_RCT, YBR_ICT and PALETTE COLOR become RGB the way pydicom's
own path does it (``pixel_array`` with ``as_rgb``), including its reading of JFIF markers and component
IDs, which decide whether a JPEG labelled "RGB" is really YCbCr. MONOCHROME1/2 are replicated to three
channels and flagged. Samples wider than 8 bits are scaled linearly from [0, 2^BitsStored − 1].

Privacy: only the tags in ``_TAGS`` are read, so patient name, ID and dates are never parsed.
"""

from __future__ import annotations

import io
import logging
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from ..acquisition import DATASET_KEYWORDS, Acquisition
from ..errors import (
    CorruptImageError,
    DecompressionBombError,
    ImageDecodeError,
    NoPixelDataError,
    TruncatedImageError,
    UnsupportedPixelFormatError,
    UnsupportedTransferSyntaxError,
)
from ..identifiers import DicomIdentifiers
from ..limits import DecodeLimits
from ..result import DecodedImage, Frame
from . import jpeg as jpeg_plugin
from .base import check_size, grey_to_rgb, load_pillow, pillow_error, scale_to_uint8

FORMAT = "dicom"
log = logging.getLogger(__name__)

_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber",
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "ICCProfile", *DATASET_KEYWORDS,
    "PixelData", "FloatPixelData", "DoubleFloatPixelData",
]

_MONO = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
_PALETTE = "PALETTE COLOR"
_JPEG_8BIT_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
_DEFLATED = "1.2.840.10008.1.2.1.99"
_J2K_SYNTAXES = (
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
)
_CODESTREAM_SYNTAXES = _J2K_SYNTAXES + (
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
)
"""Syntaxes whose plugins allocate from the size in the codestream, not from Rows/Columns."""
_TRUNCATION_HINTS = ("less than expected", "truncated", "eof", "end of", "insufficient", "not enough")


def decode(data: bytes, limits: DecodeLimits, min_side: int | None) -> DecodedImage:
    ds, ts = _read(data, limits)
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedPixelFormatError(
                "float pixel data (parametric maps) is not a photograph; send an integer-valued image",
                format=FORMAT,
            )
        ids = DicomIdentifiers.from_dataset(ds, ts, 0)
        raise NoPixelDataError(
            f"the DICOM instance has no Pixel Data ({ids.sop_class_name}, SOP Instance "
            f"{ids.sop_instance_uid or 'unknown'}); only image instances can be scored",
            format=FORMAT,
        )
    rows = _required_int(ds, "Rows")
    cols = _required_int(ds, "Columns")
    spp = _required_int(ds, "SamplesPerPixel")
    bits_allocated = _required_int(ds, "BitsAllocated")
    bits_stored = _optional_int(ds, "BitsStored", bits_allocated)
    _optional_int(ds, "PixelRepresentation", 0)  # a malformed value fails here, by name, not deep in pydicom
    nframes = _optional_int(ds, "NumberOfFrames", 1)
    pi = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    check_size(cols, rows, nframes, limits, fmt=FORMAT)
    _check_pixel_format(pi, spp, bits_allocated, bits_stored)
    ids = DicomIdentifiers.from_dataset(ds, ts, nframes)
    decoder = _pixel_decoder(ts)

    if ts in _JPEG_8BIT_SYNTAXES and bits_allocated == 8 and bits_stored == 8 and pi != _PALETTE:
        frames_bytes = list(_encapsulated_frames(ds, nframes))
        first = jpeg_plugin.parse_header(frames_bytes[0], FORMAT)
        if first.precision == 8 and first.is_lossy_dct:
            frames, reduction = _decode_jpeg_frames(frames_bytes, pi, rows, cols, spp, min_side)
            log.debug("decoded DICOM with Pillow: %s", ids.log_fields())
            return _result(frames, pi, rows, cols, ids, reduction, "pillow-draft" if reduction > 1 else "pillow",
                           _icc(ds), Acquisition.from_dataset(ds))

    if ts in _CODESTREAM_SYNTAXES:
        for frame in _encapsulated_frames(ds, nframes):
            _check_codestream_size(frame, ts, rows, cols, limits)
    frames = list(_decode_with_pydicom(decoder, ds, pi, nframes))
    log.debug("decoded DICOM with pydicom: %s", ids.log_fields())
    return _result(frames, pi, rows, cols, ids, 1, "pydicom", _icc(ds), Acquisition.from_dataset(ds))


def _icc(ds: Any) -> bytes | None:
    """ICC Profile (0028,2000) of the image pixel module; a malformed one reads as none."""
    try:
        value = ds.get("ICCProfile")
    except Exception:  # noqa: BLE001 - a broken optional element must not cost the image
        return None
    return bytes(value) if isinstance(value, (bytes, bytearray)) and len(value) >= 128 else None


def _result(
    frames: list[np.ndarray], pi: str, rows: int, cols: int, ids: DicomIdentifiers, reduction: int, decoder: str,
    icc: bytes | None = None, acquisition: Acquisition | None = None,
) -> DecodedImage:
    return DecodedImage(
        format=FORMAT,
        frames=tuple(Frame(a, i + 1) for i, a in enumerate(frames)),
        monochrome=pi in _MONO,
        source_size=(rows, cols),
        reduction=reduction,
        decoder=decoder,
        dicom=ids,
        photometric_interpretation=pi,
        icc_profile=icc,
        acquisition=acquisition if acquisition is not None and not acquisition.empty else None,
    )


# -- reading ----------------------------------------------------------------------------------------


def _read(data: bytes, limits: DecodeLimits) -> tuple[Any, str]:
    from pydicom import dcmread
    from pydicom.filereader import _read_file_meta_info, read_preamble  # no public bytes-level API
    from pydicom.uid import UID

    fp = io.BytesIO(data)
    try:
        read_preamble(fp, True)
        meta = _read_file_meta_info(fp)
        ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ")
    except Exception as exc:  # noqa: BLE001 - any failure of pydicom on these bytes is bad input
        raise _dicom_error(exc, "reading the file meta information") from None
    if ts == _DEFLATED:
        # pydicom inflates the whole data set with no bound; check what it would allocate first.
        _check_inflated_size(data[fp.tell() :], limits)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(io.BytesIO(data), force=True, specific_tags=_TAGS)
            # Touch the elements so that lazy parsing errors surface here, typed.
            for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames"):
                ds.get(keyword)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of pydicom on these bytes is bad input
        raise _dicom_error(exc, "parsing the data set") from None
    # pydicom only warns when the data ends inside an element of undefined length (encapsulated pixel
    # data, sequences) and then drops that element; without this, a cut file reads as "no pixel data".
    if any("end of file" in str(w.message).lower() for w in caught) and "PixelData" not in ds:
        raise TruncatedImageError(
            "the DICOM file ends inside an element (the data was cut off in transit or storage); resend it whole",
            format=FORMAT,
        )
    if not ts:
        # No (0002,0010): pydicom guessed the encoding; the pixel decoders need it spelled out.
        implicit, little = ds.original_encoding
        ts = (
            "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
        )
        ds.file_meta.TransferSyntaxUID = UID(ts)
    return ds, ts


def _check_inflated_size(deflated: bytes, limits: DecodeLimits) -> None:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(deflated, limits.max_bytes + 1)
    except zlib.error as exc:
        raise CorruptImageError(f"the deflated DICOM data set is corrupt ({exc})", format=FORMAT) from None
    if len(out) > limits.max_bytes or inflater.unconsumed_tail:
        raise DecompressionBombError(
            f"the deflated DICOM data set inflates to more than {limits.max_bytes} bytes; "
            "raise DecodeLimits.max_bytes if this is a real image",
            format=FORMAT,
        )


def _required_int(ds: Any, keyword: str) -> int:
    try:
        value = ds.get(keyword)
    except Exception as exc:  # noqa: BLE001 - any failure of pydicom on these bytes is bad input
        raise _dicom_error(exc, f"reading {keyword}") from None
    if value is None or value == "":
        raise CorruptImageError(
            f"the DICOM image has no {keyword} attribute, which pixel data requires", format=FORMAT
        )
    return _as_int(value, keyword)


def _optional_int(ds: Any, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
    except Exception as exc:  # noqa: BLE001 - any failure of pydicom on these bytes is bad input
        raise _dicom_error(exc, f"reading {keyword}") from None
    if value is None or value == "":
        return default
    return _as_int(value, keyword)


def _as_int(value: Any, keyword: str) -> int:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        raise CorruptImageError(f"the DICOM attribute {keyword} has several values; it must have one", format=FORMAT)
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise CorruptImageError(f"the DICOM attribute {keyword} is not an integer", format=FORMAT) from None


def _check_pixel_format(pi: str, spp: int, bits_allocated: int, bits_stored: int) -> None:
    if pi in _MONO or pi == _PALETTE:
        wanted = 1
    elif pi in _COLOUR:
        wanted = 3
    else:
        raise UnsupportedPixelFormatError(
            f"Photometric Interpretation {pi or '(missing)'!r} is not supported; supported are "
            f"{', '.join(_COLOUR + _MONO + (_PALETTE,))}",
            format=FORMAT,
        )
    if spp != wanted:
        raise CorruptImageError(
            f"Samples per Pixel is {spp}, but {pi} needs {wanted}", format=FORMAT
        )
    if bits_allocated not in (1, 8, 16, 32):
        raise UnsupportedPixelFormatError(
            f"Bits Allocated {bits_allocated} is not supported (1, 8, 16 or 32)", format=FORMAT
        )
    if not 1 <= bits_stored <= bits_allocated:
        raise CorruptImageError(
            f"Bits Stored {bits_stored} is outside 1..Bits Allocated ({bits_allocated})", format=FORMAT
        )


def _pixel_decoder(ts: str) -> Any:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    name = UID(ts).name if ts else "missing"
    try:
        decoder = get_decoder(ts)
    except (NotImplementedError, ValueError):
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {ts} ({name}) cannot be decoded: pydicom has no pixel decoder for it. "
            "Ask the sender to transcode to JPEG Baseline, JPEG 2000 or Explicit VR Little Endian.",
            transfer_syntax_uid=ts,
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a pixel-data plugin"
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {ts} ({name}) needs a plugin that is not installed ({missing}); "
            "install it on this host",
            transfer_syntax_uid=ts,
        )
    return decoder


# -- JPEG frames through Pillow ---------------------------------------------------------------------


def _encapsulated_frames(ds: Any, nframes: int) -> Iterator[bytes]:
    from pydicom.encaps import generate_frames

    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    count = 0
    try:
        for frame in generate_frames(ds.PixelData, number_of_frames=nframes, extended_offsets=extended):
            count += 1
            yield frame
            if count == nframes:
                return
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of pydicom on these bytes is bad input
        raise _dicom_error(exc, "splitting the encapsulated pixel data into frames") from None
    raise TruncatedImageError(
        f"the encapsulated pixel data holds {count} of the {nframes} frames it declares; re-send the complete file",
        format=FORMAT,
    )


def _decode_jpeg_frames(
    frames_bytes: list[bytes], pi: str, rows: int, cols: int, spp: int, min_side: int | None
) -> tuple[list[np.ndarray], int]:
    from pydicom.pixels.processing import convert_color_space

    out: list[np.ndarray] = []
    reduction = 1
    for frame in frames_bytes:
        header = jpeg_plugin.parse_header(frame, FORMAT)
        if (header.width, header.height) != (cols, rows) or header.components != spp:
            raise CorruptImageError(
                f"a JPEG frame is {header.width}×{header.height}×{header.components} but the data set declares "
                f"{cols}×{rows}×{spp}",
                format=FORMAT,
            )
        ybr_to_rgb = spp == 3 and _stream_is_ybr(header, pi)
        raw_ycc = spp == 3 and header.libjpeg_sees_ycbcr and not ybr_to_rgb
        try:
            im = Image.open(io.BytesIO(frame), formats=["JPEG"])
        except Exception as exc:  # noqa: BLE001 - any failure of Pillow on these bytes is bad input
            raise pillow_error(exc, FORMAT, "reading a JPEG frame header") from None
        try:
            mode = "YCbCr" if raw_ycc else ("L" if spp == 1 else "RGB")
            im.draft(mode, (min_side, min_side) if min_side else None)
            load_pillow(im, FORMAT)
            reduction = max(1, round(cols / im.size[0]))
            arr = np.array(im, dtype=np.uint8)
        finally:
            im.close()
        if spp == 1:
            if arr.ndim == 3:
                arr = arr[:, :, 0]
            if pi == "MONOCHROME1":
                arr = np.invert(arr)  # 255 - arr, in uint8
            arr = grey_to_rgb(arr)
        elif ybr_to_rgb and not header.libjpeg_sees_ycbcr:
            # libjpeg handed back the components untouched; convert the way pydicom does.
            arr = np.ascontiguousarray(convert_color_space(arr, "YBR_FULL", "RGB"))
        out.append(np.ascontiguousarray(arr))
    return out, reduction


def _check_codestream_size(frame: bytes, ts: str, rows: int, cols: int, limits: DecodeLimits) -> None:
    """The plugins size their output from the codestream header; a frame that claims more than the
    data set declares would be decoded (and allocated) before pydicom noticed the mismatch."""
    if ts in _J2K_SYNTAXES:
        at = bytes(frame[:4096]).find(b"\xff\x4f\xff\x51")
        if at < 0 or len(frame) < at + 24:
            raise CorruptImageError("a JPEG 2000 frame has no SIZ header in its first 4 KiB", format=FORMAT)
        siz = bytes(frame[at + 8 : at + 24])
        x, y, x0, y0 = (int.from_bytes(siz[k : k + 4], "big") for k in (0, 4, 8, 12))
        width, height = x - x0, y - y0
    else:
        header = jpeg_plugin.parse_header(frame, FORMAT)
        width, height = header.width, header.height
    if (width, height) != (cols, rows):
        check_size(max(width, 1), max(height, 1), 1, limits, fmt=FORMAT, what="a compressed frame's codestream")
        raise CorruptImageError(
            f"a compressed frame is {width}×{height} but the data set declares {cols}×{rows}", format=FORMAT
        )


def _stream_is_ybr(header: jpeg_plugin.JpegHeader, pi: str) -> bool:
    """pydicom's reading of the codestream (DecodeRunner._conform_jpg_colorspace): component IDs
    'RGB' mean RGB whatever the label; a JFIF marker means YCbCr; otherwise trust the label."""
    if header.component_ids in ([82, 71, 66], [114, 103, 98]):
        return False
    if header.jfif and "YBR" not in pi:
        return True
    return pi in ("YBR_FULL", "YBR_FULL_422")


# -- everything else through pydicom ----------------------------------------------------------------


def _decode_with_pydicom(decoder: Any, ds: Any, pi: str, nframes: int) -> Iterator[np.ndarray]:
    from pydicom.pixels.processing import apply_color_lut, convert_color_space

    try:
        for arr, meta in decoder.iter_array(ds, indices=range(nframes), as_rgb=True):
            out_pi = str(meta.get("photometric_interpretation", pi))
            bits = int(meta.get("bits_stored", 8))
            signed = int(meta.get("pixel_representation", 0)) == 1
            if out_pi in ("YBR_FULL", "YBR_FULL_422"):
                arr = convert_color_space(arr, out_pi, "RGB")
            if out_pi == _PALETTE:
                arr = apply_color_lut(arr, ds)
                lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
                yield np.ascontiguousarray(scale_to_uint8(arr, 8 if lut_bits == 8 else 16))
            elif out_pi in _MONO:
                grey = scale_to_uint8(arr, bits, signed)
                if out_pi == "MONOCHROME1":
                    grey = 255 - grey
                yield grey_to_rgb(grey)
            else:
                yield np.ascontiguousarray(scale_to_uint8(arr, bits, signed))
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of pydicom on these bytes is bad input
        raise _dicom_error(exc, "decoding the pixel data") from None


def _dicom_error(exc: BaseException, stage: str) -> ImageDecodeError:
    if isinstance(exc, ImageDecodeError):
        return exc
    if isinstance(exc, MemoryError):
        return DecompressionBombError(f"ran out of memory while {stage}", format=FORMAT)
    # Only the exception type and a short, technical message: pydicom's pixel errors carry sizes and
    # UIDs, never element values, and we never read patient attributes.
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:300]
    if isinstance(exc, EOFError) or any(h in text.lower() for h in _TRUNCATION_HINTS):
        return TruncatedImageError(
            f"the DICOM file is truncated ({stage}: {text}); re-send the complete file", format=FORMAT
        )
    return CorruptImageError(f"the DICOM file is corrupt ({stage}: {type(exc).__name__}: {text})", format=FORMAT)
