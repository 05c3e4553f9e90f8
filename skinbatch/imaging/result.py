"""What a decode returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .identifiers import DicomIdentifiers


@dataclass(frozen=True)
class Frame:
    """One decoded frame: RGB, ``uint8``, shape (height, width, 3), C-contiguous."""

    pixels: np.ndarray = field(repr=False)
    number: int
    """1-based frame number (DICOM's convention); 1 for JPEG and PNG."""

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class DecodedImage:
    """The frames of one input plus what the consumer needs to report on them."""

    format: str
    """``"dicom"``, ``"jpeg"`` or ``"png"``, detected from the bytes."""
    frames: tuple[Frame, ...]
    monochrome: bool
    """The source had one channel (MONOCHROME1/2, grey JPEG/PNG); its channel was replicated to RGB."""
    source_size: tuple[int, int]
    """(height, width) of a frame at full resolution, after EXIF orientation."""
    reduction: int = 1
    """DCT-domain reduction applied while decoding (1, 2, 4 or 8); frames are ``source_size / reduction``."""
    decoder: str = ""
    """Which backend produced the pixels, e.g. ``pillow``, ``pillow-draft`` or ``pydicom+pylibjpeg``."""
    dicom: DicomIdentifiers | None = None
    exif_orientation: int | None = None
    """EXIF orientation tag (1–8) found in a JPEG; already applied to the pixels."""
    had_alpha: bool = False
    """The PNG had transparency; it was composited onto white, as viewers display it."""
    photometric_interpretation: str | None = None
    """DICOM only: the value declared in the data set, before conversion to RGB."""

    @property
    def arrays(self) -> list[np.ndarray]:
        return [f.pixels for f in self.frames]
