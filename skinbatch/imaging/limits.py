"""Resource limits, checked before any pixel is decoded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one message may cost. The pixel limits are checked against the sizes declared in
    the headers (DICOM attributes, JPEG SOF, PNG IHDR), before decoding, so a decompression bomb is
    refused without allocating its pixels."""

    max_bytes: int = 128 * 1024 * 1024
    """Largest input accepted, and the most a deflated DICOM data set may inflate to."""
    max_pixels: int = 80_000_000
    """Largest frame (rows × columns). 80 MP leaves room for 50 MP phone sensors."""
    max_total_pixels: int = 160_000_000
    """All frames of one input together; bounds memory at about 3 bytes per pixel."""
    max_frames: int = 1000
    """Most frames in one multi-frame DICOM instance."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_total_pixels", "max_frames"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"DecodeLimits.{name} must be a positive integer")
