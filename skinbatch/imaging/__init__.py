"""Imaging: DICOM / JPEG / PNG / WebP / TIFF / HEIF / AVIF bytes → RGB frames → the model's 299×299×3 ``uint8`` input.

Shared by the Kafka consumer and the archive triage tool. Pure logic: no I/O, no logging of patient
data. See ``docs/formats.md`` for what decodes with which backend.

>>> from skinbatch.imaging import decode, preprocess, Preprocessing
>>> p = Preprocessing()                      # or ModelCard.preprocessing_spec()
>>> img = decode(data, target=p)             # DecodedImage; may use DCT-domain downscaling
>>> inputs = [preprocess(f, p) for f in img.arrays]
"""

from ._api import decode, decode_image
from .errors import (
    CorruptImageError,
    DecompressionBombError,
    EmptyInputError,
    FormatNeedsExtraError,
    ImageDecodeError,
    InputTooLargeError,
    NoPixelDataError,
    TruncatedImageError,
    UnsupportedFormatError,
    UnsupportedPixelFormatError,
    UnsupportedTransferSyntaxError,
)
from .identifiers import DicomIdentifiers
from .limits import DecodeLimits
from .preprocess import Preprocessing, PreprocessingError, preprocess
from .result import DecodedImage, Frame
from .sniff import sniff

__all__ = [
    "decode",
    "decode_image",
    "preprocess",
    "sniff",
    "Preprocessing",
    "PreprocessingError",
    "DecodeLimits",
    "DecodedImage",
    "Frame",
    "DicomIdentifiers",
    "ImageDecodeError",
    "EmptyInputError",
    "InputTooLargeError",
    "UnsupportedFormatError",
    "FormatNeedsExtraError",
    "UnsupportedTransferSyntaxError",
    "UnsupportedPixelFormatError",
    "CorruptImageError",
    "TruncatedImageError",
    "NoPixelDataError",
    "DecompressionBombError",
]
