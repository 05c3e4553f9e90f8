"""Turn one RGB frame into the model's input, as the model repository declares it.

:class:`Preprocessing` is the single definition of the resize step: the converter writes
``Preprocessing.to_dict()`` into the model card, and the consumer reads it back with
:meth:`Preprocessing.from_dict`. Normalisation is not here: it is folded into the model graph, which
takes ``uint8`` NHWC.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from skinbatch.contract import ConfigurationError

RESIZE_MODES = ("center_crop", "whole")
INTERPOLATIONS = ("bilinear", "bicubic", "lanczos", "nearest")

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class PreprocessingError(ConfigurationError):
    """The preprocessing declared by a model card (or passed in code) is not one we implement."""


@dataclass(frozen=True)
class Preprocessing:
    """How a frame becomes the model input.

    ``resize="center_crop"`` scales the shorter side to ``size`` and keeps the centre square;
    ``resize="whole"`` scales the whole frame to ``size`` × ``size`` (aspect not kept).
    ``antialias=True`` filters over the whole footprint of each output pixel when shrinking
    (Pillow's ``resize``, torchvision's ``antialias=True``); ``False`` samples the
    ``interpolation`` kernel at its native width (TensorFlow 1 / torchvision ``antialias=False``).
    ``color_management=True`` converts frames with an embedded ICC profile to sRGB before the resize
    (:mod:`skinbatch.imaging.colour`); the model card's ``color_managed_input`` sets it.
    """

    size: int = 299
    resize: str = "center_crop"
    interpolation: str = "bilinear"
    antialias: bool = True
    color_management: bool = False

    FIELDS: ClassVar[tuple[str, ...]] = ("size", "resize", "interpolation", "antialias", "color_management")

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= 8192:
            raise PreprocessingError(f"preprocessing size must be an integer in 1..8192, got {self.size!r}")
        if self.resize not in RESIZE_MODES:
            raise PreprocessingError(
                f"unknown resize mode {self.resize!r}; use one of {', '.join(RESIZE_MODES)}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessingError(
                f"unknown interpolation {self.interpolation!r}; use one of {', '.join(INTERPOLATIONS)}"
            )
        if not isinstance(self.antialias, bool):
            raise PreprocessingError(f"antialias must be true or false, got {self.antialias!r}")
        if not isinstance(self.color_management, bool):
            raise PreprocessingError(f"color_management must be true or false, got {self.color_management!r}")
        if self.interpolation == "lanczos" and not self.antialias:
            raise PreprocessingError(
                "lanczos without antialiasing is not implemented; set antialias=true "
                "or choose bilinear/bicubic (and re-run `skinbatch convert` if it came from a model card)"
            )

    @property
    def allows_reduced_decode(self) -> bool:
        """Whether decoding at reduced scale (JPEG: 1/2, 1/4 or 1/8 in the DCT domain; PNG: an integer
        box reduction) gives the same input within tolerance.

        Both average pixels, which an antialiased resize would do anyway; a
        non-antialiased or nearest-neighbour resize samples single pixels, so it would differ."""
        return self.antialias and self.interpolation != "nearest"

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``color_management`` only where it is on (the card keeps it outside this dict)."""
        d = asdict(self)
        if not self.color_management:
            del d["color_management"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        if not isinstance(d, dict):
            raise PreprocessingError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.FIELDS))
        if unknown:
            raise PreprocessingError(
                f"unknown preprocessing field(s) {unknown}; this version of skinbatch knows "
                f"{list(cls.FIELDS)}. Upgrade skinbatch or re-run `skinbatch convert`."
            )
        return cls(**d)


def preprocess(frame: np.ndarray, p: Preprocessing) -> np.ndarray:
    """Resize one RGB ``uint8`` frame (H, W, 3) to the model input: C-contiguous ``uint8`` (size, size, 3).

    The crop is computed in source coordinates and handed to Pillow as a (fractional) box, so
    "resize the shorter side, then crop the centre" costs one resampling pass over the output pixels
    only, and does not depend on how the intermediate size would be rounded.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(
            f"preprocess expects an RGB uint8 array of shape (H, W, 3), got {dtype} {shape}; "
            "decode it with skinbatch.imaging.decode first"
        )
    h, w = frame.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("preprocess got an empty frame (a dimension is 0)")
    box = crop_box(w, h, p)
    im = Image.fromarray(np.ascontiguousarray(frame), "RGB")
    out = resize_image(im, box, p)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8))


def crop_box(width: float, height: float, p: Preprocessing) -> tuple[float, float, float, float]:
    """The region of the source, in its pixel coordinates, that becomes the model input."""
    if p.resize == "whole":
        return (0.0, 0.0, float(width), float(height))
    side = float(min(width, height))
    x0 = (width - side) / 2.0
    y0 = (height - side) / 2.0
    return (x0, y0, x0 + side, y0 + side)


def resize_image(im: Image.Image, box: tuple[float, float, float, float], p: Preprocessing) -> Image.Image:
    """Resample ``box`` of ``im`` to (size, size) with the declared filter."""
    size = (p.size, p.size)
    if p.antialias or p.interpolation == "nearest":
        return im.resize(size, _PIL_FILTERS[p.interpolation], box=box)
    # Pillow's transform samples the kernel at its native width (no antialiasing); the affine maps
    # output pixel centres to source coordinates with half-pixel centres, like torchvision and TF2.
    x0, y0, x1, y1 = box
    sx = (x1 - x0) / p.size
    sy = (y1 - y0) / p.size
    return im.transform(
        size, Image.Transform.AFFINE, (sx, 0.0, x0, 0.0, sy, y0), resample=_PIL_FILTERS[p.interpolation]
    )
