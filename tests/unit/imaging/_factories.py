"""Inputs for the imaging tests, made here: nothing is fetched from the network.

pydicom's own test files are listed from its installed ``data/test_files`` folder directly;
``pydicom.data.get_testdata_files()`` would try the network for more and hang.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom.data
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

PYDICOM_TEST_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "test_files"

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
RLE = "1.2.840.10008.1.2.5"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-7731"


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A small photo-like RGB image: smooth gradients, a dark blob and noise (not flat, so JPEG
    behaves as it does on real pictures)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 230, size=(4, 5, 3), dtype=np.uint8)
    im = Image.fromarray(base, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(im).astype(np.int16)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = ((xx - width * 0.6) ** 2 + (yy - height * 0.4) ** 2) < (min(width, height) * 0.15) ** 2
    arr[blob] -= 60
    arr += rng.normal(0, 4, size=arr.shape).astype(np.int16)
    return arr.clip(0, 255).astype(np.uint8)


def asymmetric(width: int = 48, height: int = 32) -> np.ndarray:
    """Distinct colours per quadrant, so every rotation and flip gives a different image."""
    a = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    a[:h2, :w2] = (255, 0, 0)
    a[:h2, w2:] = (0, 255, 0)
    a[h2:, :w2] = (0, 0, 255)
    a[h2:, w2:] = (255, 255, 0)
    return a


def jpeg(arr: np.ndarray, quality: int = 95, orientation: int | None = None, subsampling: str = "4:2:0") -> bytes:
    im = Image.fromarray(arr)
    buf = io.BytesIO()
    kwargs: dict = {"quality": quality}
    if im.mode == "RGB":
        kwargs["subsampling"] = subsampling
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def png(im: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def png_raw(width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG written chunk by chunk, for variants Pillow cannot save (e.g. 16-bit RGB)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def dicom_dataset(
    frames: list[np.ndarray] | None = None,
    *,
    sop_class: str = VL_PHOTOGRAPHIC,
    photometric: str = "RGB",
    planar: int = 0,
    bits_allocated: int = 8,
    bits_stored: int | None = None,
    transfer_syntax: str = EXPLICIT_LE,
    encapsulated: list[bytes] | None = None,
    rows: int | None = None,
    columns: int | None = None,
) -> Dataset:
    """A DICOM image with patient attributes filled in (so tests can prove they never leak)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.AccessionNumber = "ACC123"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240102"
    ds.Modality = "XC"
    spp = 1 if photometric.startswith("MONOCHROME") else 3
    first = frames[0] if frames else None
    ds.Rows = rows if rows is not None else first.shape[0]
    ds.Columns = columns if columns is not None else first.shape[1]
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    if spp == 3:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    n = len(encapsulated) if encapsulated is not None else len(frames or [])
    if n > 1:
        ds.NumberOfFrames = n
    if encapsulated is not None:
        ds.PixelData = encapsulate(encapsulated)
        ds["PixelData"].VR = "OB"
    else:
        stack = np.stack(frames)
        if spp == 3 and planar == 1:
            stack = np.ascontiguousarray(stack.transpose(0, 3, 1, 2))
        dtype = {8: "u1", 16: "u2", 32: "u4"}[bits_allocated]
        order = ">" if transfer_syntax == EXPLICIT_BE else "<"
        ds.PixelData = stack.astype(order + dtype).tobytes()
        ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom(frames: list[np.ndarray] | None = None, **kwargs) -> bytes:
    return dicom_bytes(dicom_dataset(frames, **kwargs))


def jpeg_dicom(arr: np.ndarray, frames: int = 1, sop_class: str = VL_PHOTOGRAPHIC, quality: int = 95) -> bytes:
    data = jpeg(arr, quality=quality)
    photometric = "YBR_FULL_422" if arr.ndim == 3 else "MONOCHROME2"
    return dicom(
        [arr], encapsulated=[data] * frames, photometric=photometric, transfer_syntax=JPEG_BASELINE,
        sop_class=sop_class, rows=arr.shape[0], columns=arr.shape[1],
    )


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())
