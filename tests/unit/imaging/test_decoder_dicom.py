"""DICOM: every colour file shipped with pydicom, synthesised dermatology instances, identifiers,
limits and typed failures."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.pixels.processing import apply_color_lut

from skinbatch.imaging import (
    CorruptImageError,
    DecodeLimits,
    DecompressionBombError,
    ImageDecodeError,
    NoPixelDataError,
    Preprocessing,
    TruncatedImageError,
    UnsupportedPixelFormatError,
    UnsupportedTransferSyntaxError,
    decode,
    decode_image,
    preprocess,
)
from skinbatch.imaging.decoders.base import scale_to_uint8

from . import _factories as f

pytestmark = pytest.mark.timeout(60)

JPEG_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}


def _headers(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a file pydicom cannot read is not a sample
            return None

def _colour_files() -> list[str]:
    names = []
    for path in sorted(f.PYDICOM_TEST_FILES.glob("*.dcm")):
        ds = _headers(path)
        colour = ds is not None and (
            ds.get("SamplesPerPixel") == 3 or ds.get("PhotometricInterpretation") == "PALETTE COLOR")
        if colour:
            names.append(path.name)
    return names


COLOUR_FILES = _colour_files()


def reference_rgb(path) -> tuple[np.ndarray, str]:
    """pydicom's own path: ``pixel_array`` (which converts YBR to RGB), palette applied, scaled to 8 bits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[None]
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        arr = scale_to_uint8(arr, 8 if arr.dtype == np.uint8 else 16)
    else:
        arr = scale_to_uint8(arr, ds.BitsStored, ds.PixelRepresentation == 1)
    return arr, str(ds.file_meta.TransferSyntaxUID)


def test_the_folder_has_the_colour_files_we_expect() -> None:
    assert len(COLOUR_FILES) >= 30


@pytest.mark.parametrize("name", COLOUR_FILES)
def test_colour_file_matches_pydicom(name: str) -> None:
    path = f.PYDICOM_TEST_FILES / name
    ref, ts = reference_rgb(path)
    img = decode(path.read_bytes())
    got = np.stack(img.arrays)
    assert got.shape == ref.shape and got.dtype == np.uint8
    assert not img.monochrome
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    if ts in JPEG_SYNTAXES:
        # libjpeg-turbo (Pillow) against pydicom's path: different IDCT and upsampling rounding.
        assert diff.mean() <= 1.0 and diff.max() <= 12
    else:
        assert diff.max() == 0


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "JPGExtended.dcm", "liver_1frame.dcm", "image_dfl.dcm", "MR_small_expb.dcm"])
def test_monochrome_files_are_replicated_and_flagged(name: str) -> None:
    path = f.PYDICOM_TEST_FILES / name
    ref, _ = reference_rgb(path)
    img = decode(path.read_bytes())
    assert img.monochrome
    got = np.stack(img.arrays)
    assert (got[..., 0] == got[..., 2]).all()
    assert np.array_equal(got[..., 0], ref)


def test_monochrome1_is_inverted() -> None:
    grey = np.array([[0, 255], [100, 200]], np.uint8)
    (out,) = decode_image(f.dicom([grey], photometric="MONOCHROME1"))
    assert out[..., 0].tolist() == [[255, 0], [155, 55]]


def test_multi_frame_jpeg() -> None:
    img = decode((f.PYDICOM_TEST_FILES / "examples_ybr_color.dcm").read_bytes())
    assert len(img.frames) == 30 and [fr.number for fr in img.frames] == list(range(1, 31))
    assert img.dicom is not None and img.dicom.number_of_frames == 30
    assert img.dicom.frame_path(30).endswith(f"/instances/{img.dicom.sop_instance_uid}/frames/30")


@pytest.mark.parametrize("sop_class", [f.VL_PHOTOGRAPHIC, f.DERMOSCOPIC])
def test_dermatology_sop_classes_with_jpeg_baseline(sop_class: str) -> None:
    arr = f.photo(96, 64)
    img = decode(f.jpeg_dicom(arr, frames=2, sop_class=sop_class))
    assert img.decoder == "pillow" and len(img.frames) == 2
    assert img.dicom.sop_class_uid == sop_class
    assert "Photographic" in img.dicom.sop_class_name or "Dermoscopic" in img.dicom.sop_class_name
    assert f.mad(img.arrays[1], arr) < 3


@pytest.mark.parametrize("ts", [f.EXPLICIT_LE, f.IMPLICIT_LE, f.EXPLICIT_BE, f.DEFLATED])
@pytest.mark.parametrize("planar", [0, 1])
def test_uncompressed_syntaxes_and_planar_configuration(ts: str, planar: int) -> None:
    frames = [f.photo(20, 12, seed=1), f.photo(20, 12, seed=2)]
    img = decode(f.dicom(frames, transfer_syntax=ts, planar=planar))
    assert [a.tolist() for a in img.arrays] == [a.tolist() for a in frames]


@pytest.mark.parametrize(("bits", "stored"), [(16, 16), (16, 12), (32, 32)])
def test_wide_samples_are_scaled_linearly(bits: int, stored: int) -> None:
    top = (1 << stored) - 1
    px = np.zeros((1, 3, 3), np.uint64)
    px[0, 0] = top
    px[0, 1] = top // 2 + 1
    (out,) = decode_image(f.dicom([px], bits_allocated=bits, bits_stored=stored))
    assert out[0, 0].tolist() == [255] * 3 and out[0, 1].tolist() == [128] * 3 and out[0, 2].tolist() == [0] * 3


def test_rle_and_ybr_full() -> None:
    from pydicom.pixels.processing import convert_color_space

    rgb = f.photo(16, 8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds = f.dicom_dataset([ybr], photometric="YBR_FULL")
    ds.compress(f.RLE)
    (out,) = decode_image(f.dicom_bytes(ds))
    assert np.abs(out.astype(int) - rgb).max() <= 2


def test_jpeg_frames_use_dct_downscaling_with_a_target() -> None:
    arr = f.photo(1024, 768, seed=4)
    data = f.jpeg_dicom(arr, quality=92)
    p = Preprocessing(size=64)
    img = decode(data, target=p)
    assert img.reduction == 8 and img.decoder == "pillow-draft" and img.arrays[0].shape == (96, 128, 3)
    assert img.source_size == (768, 1024)
    assert f.mad(preprocess(img.arrays[0], p), preprocess(decode_image(data)[0], p)) <= 2


def test_identifiers_and_no_patient_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ds = f.dicom_dataset([f.photo(8, 8)], sop_class=f.DERMOSCOPIC)
    img = decode(f.dicom_bytes(ds))
    ids = img.dicom
    assert ids.study_instance_uid == ds.StudyInstanceUID and ids.series_instance_uid == ds.SeriesInstanceUID
    assert ids.sop_instance_uid == ds.SOPInstanceUID and ids.accession_number == "ACC123"
    assert ids.transfer_syntax_uid == f.EXPLICIT_LE
    assert "ACC123" not in repr(ids) and "accession_number" not in ids.log_fields()
    del ds.PixelData
    with pytest.raises(NoPixelDataError) as info:
        decode(f.dicom_bytes(ds))
    text = caplog.text + str(info.value) + repr(img)
    for secret in (f.PATIENT_NAME, "Doe", f.PATIENT_ID, "19700101", "20240102", "ACC123"):
        assert secret not in text


def test_unsupported_transfer_syntax() -> None:
    ds = f.dicom_dataset([f.photo(8, 8)], encapsulated=[b"\x00\x00\x01\xb3" + bytes(60)],
                         transfer_syntax="1.2.840.10008.1.2.4.100")  # MPEG2 video
    data = f.dicom_bytes(ds)
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        decode(data)
    assert info.value.type == "unsupported_transfer_syntax"
    assert info.value.to_dict()["transfer_syntax_uid"] == "1.2.840.10008.1.2.4.100"
    assert "MPEG2" in str(info.value)


def test_unsupported_photometric_interpretation() -> None:
    ds = f.dicom_dataset([f.photo(8, 8)])
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    with pytest.raises(UnsupportedPixelFormatError, match="YBR_PARTIAL_420"):
        decode(f.dicom_bytes(ds))


@pytest.mark.parametrize(("rows", "cols", "frames"), [(60000, 60000, 1), (1000, 1000, 5000), (4000, 4000, 20)])
def test_decompression_bomb_from_the_attributes(rows: int, cols: int, frames: int) -> None:
    ds = f.dicom_dataset([f.photo(8, 8)])
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    with pytest.raises(DecompressionBombError):
        decode(f.dicom_bytes(ds))


def test_deflate_bomb_is_refused_before_inflating() -> None:
    ds = f.dicom_dataset([np.zeros((1000, 1000, 3), np.uint8)], transfer_syntax=f.DEFLATED)
    data = f.dicom_bytes(ds)
    assert len(data) < 20_000
    with pytest.raises(DecompressionBombError, match="inflates"):
        decode(data, DecodeLimits(max_bytes=1_000_000))


def test_codestream_larger_than_declared_is_corrupt() -> None:
    arr = f.photo(64, 48)
    ds = f.dicom_dataset([arr], encapsulated=[f.jpeg(arr)], photometric="YBR_FULL_422",
                         transfer_syntax=f.JPEG_BASELINE, rows=24, columns=32)
    with pytest.raises(CorruptImageError, match="64×48"):
        decode(f.dicom_bytes(ds))


def test_truncated_pixel_data() -> None:
    with pytest.raises(TruncatedImageError):
        decode((f.PYDICOM_TEST_FILES / "MR_truncated.dcm").read_bytes())
    data = f.jpeg_dicom(f.photo(64, 64))
    with pytest.raises(ImageDecodeError):
        decode(data[: len(data) - 600])


def test_files_pydicom_cannot_decode_either_are_typed() -> None:
    # 12-bit lossy JPEG that only GDCM decodes; a J2K codestream whose header claims 3.7 billion columns.
    broken = (("JPEG-lossy.dcm", "corrupt"), ("JPEG2000-embedded-sequence-delimiter.dcm", "decompression_bomb"))
    for name, kind in broken:
        with pytest.raises(ImageDecodeError) as info:
            decode((f.PYDICOM_TEST_FILES / name).read_bytes())
        assert info.value.type == kind
