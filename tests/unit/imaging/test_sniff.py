"""The format comes from the bytes; anything else is a typed, explanatory error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from skinbatch.imaging import EmptyInputError, UnsupportedFormatError, decode, sniff
from skinbatch.imaging.sniff import detect

from . import _factories as f

pytestmark = pytest.mark.timeout(30)


def test_supported_formats_are_detected_from_bytes() -> None:
    arr = f.photo(16, 12)
    assert sniff(f.jpeg(arr)) == "jpeg"
    assert sniff(f.png(Image.fromarray(arr))) == "png"
    assert sniff(f.dicom([arr])) == "dicom"


def test_dicom_without_preamble_is_detected() -> None:
    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"):
        assert detect((f.PYDICOM_TEST_FILES / name).read_bytes()) == "dicom"


def test_empty_input() -> None:
    with pytest.raises(EmptyInputError) as info:
        decode(b"")
    assert info.value.type == "empty"


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"GIF89a" + bytes(40), "GIF"),
        (b"BM" + bytes(40), "BMP"),
        (b"\xff\x0a" + bytes(40), "JPEG XL"),
        (b"%PDF-1.7" + bytes(40), "PDF"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(40), "JPEG 2000"),
    ],
)
def test_other_formats_are_named_in_the_error(head: bytes, name: str) -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        decode(head)
    assert info.value.type == "unsupported_format"
    assert name in str(info.value)


def test_random_bytes_are_unsupported() -> None:
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(UnsupportedFormatError):
        decode(b"x" + data)


def test_a_misleading_name_does_not_matter() -> None:
    # There is no file name in the API at all: a PNG is a PNG whatever it was called.
    data = f.png(Image.fromarray(f.photo(8, 8)))
    assert decode(data).format == "png"


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"II*\x00" + bytes(40), "tiff"),
        (b"MM\x00*" + bytes(40), "tiff"),
        (b"II+\x00" + bytes(40), "tiff"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40), "webp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40), "heif"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + bytes(40), "heif"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(40), "avif"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif" + bytes(40), "avif"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomavc1" + bytes(40), "ISO media (MP4/MOV)"),
    ],
)
def test_photo_formats_are_detected_from_their_signature(head: bytes, fmt: str) -> None:
    assert detect(head) == fmt
