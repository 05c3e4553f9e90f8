"""What a decode returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .acquisition import Acquisition
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
class ColorInfo:
    """An input's embedded ICC profile and whether its pixels were converted from it to sRGB."""

    description: str
    """The profile's description tag, e.g. ``Adobe RGB (1998)`` or ``Display P3``; "" where it has none."""
    sha256: str
    """SHA-256 of the profile's bytes: names the exact profile."""
    applied: bool
    """The frames were converted from the profile to sRGB (the model card asks for colour-managed input)."""
    reason: str = ""
    """Why it was not applied, where it was not."""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"description": self.description, "sha256": self.sha256, "applied": self.applied}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class DecodedImage:
    """The frames of one input plus what the consumer needs to report on them."""

    format: str
    """``"dicom"``, ``"jpeg"``, ``"png"``, ``"webp"``, ``"tiff"``, ``"heif"`` or ``"avif"``, detected from the bytes."""
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
    icc_profile: bytes | None = field(default=None, repr=False)
    """The embedded ICC profile as found (JPEG APP2, PNG iCCP, WebP, TIFF, HEIF, AVIF; DICOM's ICC Profile
    (0028,2000)), whether or not it was applied."""
    color: ColorInfo | None = None
    """What colour management did with ``icc_profile``; None where the input has no profile."""
    acquisition: Acquisition | None = None
    """DICOM only: dermoscopic or clinical, the Supplement 221 attributes and the anatomic region."""

    @property
    def arrays(self) -> list[np.ndarray]:
        return [f.pixels for f in self.frames]
