"""Typed errors for image decoding.

Every failure of :func:`skinbatch.imaging.decode` is an :class:`ImageDecodeError`, which is the
contract's :class:`~skinbatch.contract.InputRejected` (bad input, dead-lettered, never retried) and a
``ValueError``. Its ``type`` is a member of :class:`skinbatch.contract.ErrorType`: the consumer copies it
into dead-letter messages and metrics, so the values are a contract. Add new types there; never rename one.

Messages never contain patient data. They may name UIDs, sizes, transfer syntaxes and the decoder.
"""

from __future__ import annotations

from typing import Any

from skinbatch.contract import ErrorType, InputRejected


class ImageDecodeError(InputRejected, ValueError):
    """Base class: the bytes could not be turned into RGB frames."""

    type = "decode_error"

    def __init__(self, message: str, *, format: str | None = None) -> None:
        super().__init__(message)
        self.format = format

    def to_dict(self) -> dict[str, Any]:
        """What a dead-letter message carries: ``type``, ``message`` and ``format``."""
        return {"type": self.type, "message": self.message, "format": self.format}


class EmptyInputError(ImageDecodeError):
    type = ErrorType.EMPTY


class InputTooLargeError(ImageDecodeError):
    type = ErrorType.TOO_LARGE


class UnsupportedFormatError(ImageDecodeError):
    type = ErrorType.UNSUPPORTED_FORMAT


class FormatNeedsExtraError(ImageDecodeError):
    """The format is recognised and decodable, but by an optional package this install lacks."""

    type = ErrorType.FORMAT_NEEDS_EXTRA

    def __init__(self, message: str, *, extra: str, format: str | None = None) -> None:
        super().__init__(message, format=format)
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "extra": self.extra}


class UnsupportedTransferSyntaxError(ImageDecodeError):
    type = ErrorType.UNSUPPORTED_TRANSFER_SYNTAX

    def __init__(self, message: str, *, transfer_syntax_uid: str = "", format: str | None = "dicom") -> None:
        super().__init__(message, format=format)
        self.transfer_syntax_uid = transfer_syntax_uid

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "transfer_syntax_uid": self.transfer_syntax_uid}


class UnsupportedPixelFormatError(ImageDecodeError):
    """The container is fine, but its pixels are of a kind we do not turn into RGB
    (e.g. float pixel data, YBR_PARTIAL_420, 12-bit JPEG photos)."""

    type = ErrorType.UNSUPPORTED_PIXEL_FORMAT


class CorruptImageError(ImageDecodeError):
    type = ErrorType.CORRUPT


class TruncatedImageError(CorruptImageError):
    type = ErrorType.TRUNCATED


class NoPixelDataError(ImageDecodeError):
    type = ErrorType.NO_PIXEL_DATA


class DecompressionBombError(ImageDecodeError):
    type = ErrorType.DECOMPRESSION_BOMB


ERROR_TYPES: tuple[type[ImageDecodeError], ...] = (
    EmptyInputError,
    InputTooLargeError,
    UnsupportedFormatError,
    FormatNeedsExtraError,
    UnsupportedTransferSyntaxError,
    UnsupportedPixelFormatError,
    CorruptImageError,
    TruncatedImageError,
    NoPixelDataError,
    DecompressionBombError,
)
"""All concrete error classes; their ``type`` strings are the dead-letter vocabulary."""
