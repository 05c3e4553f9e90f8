"""Typed errors for image decoding.

Every failure of :func:`skinbatch.imaging.decode` is an :class:`ImageDecodeError`. Its ``type`` is a
stable, machine-readable string: the consumer copies it into dead-letter messages and metrics, so the
values below are a contract. Add new types; never rename one.

Messages never contain patient data. They may name UIDs, sizes, transfer syntaxes and the decoder.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ImageDecodeError(ValueError):
    """Base class: the bytes could not be turned into RGB frames."""

    type: ClassVar[str] = "decode_error"

    def __init__(self, message: str, *, format: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.format = format

    def to_dict(self) -> dict[str, Any]:
        """What a dead-letter message carries: ``type``, ``message`` and ``format``."""
        return {"type": self.type, "message": self.message, "format": self.format}


class EmptyInputError(ImageDecodeError):
    type = "empty"


class InputTooLargeError(ImageDecodeError):
    type = "too_large"


class UnsupportedFormatError(ImageDecodeError):
    type = "unsupported_format"


class UnsupportedTransferSyntaxError(ImageDecodeError):
    type = "unsupported_transfer_syntax"

    def __init__(self, message: str, *, transfer_syntax_uid: str = "", format: str | None = "dicom") -> None:
        super().__init__(message, format=format)
        self.transfer_syntax_uid = transfer_syntax_uid

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "transfer_syntax_uid": self.transfer_syntax_uid}


class UnsupportedPixelFormatError(ImageDecodeError):
    """The container is fine, but its pixels are of a kind we do not turn into RGB
    (e.g. float pixel data, YBR_PARTIAL_420, 12-bit JPEG photos)."""

    type = "unsupported_pixel_format"


class CorruptImageError(ImageDecodeError):
    type = "corrupt"


class TruncatedImageError(CorruptImageError):
    type = "truncated"


class NoPixelDataError(ImageDecodeError):
    type = "no_pixel_data"


class DecompressionBombError(ImageDecodeError):
    type = "decompression_bomb"


ERROR_TYPES: tuple[type[ImageDecodeError], ...] = (
    EmptyInputError,
    InputTooLargeError,
    UnsupportedFormatError,
    UnsupportedTransferSyntaxError,
    UnsupportedPixelFormatError,
    CorruptImageError,
    TruncatedImageError,
    NoPixelDataError,
    DecompressionBombError,
)
"""All concrete error classes; their ``type`` strings are the dead-letter vocabulary."""
