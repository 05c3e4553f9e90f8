"""Showing ``MALIGNANCY_MAP`` over the image the model saw: normalise, upsample, colour, blend. Pure numpy.

The served map is the class activation map of P(malignant) (Zhou et al. 2016) on Inception's last
convolutional grid (8 × 8 for 299 × 299 input), in logit units. For people it is shown as an overlay:

* :func:`normalise`: the positive part divided by its maximum, so 1 is where this image holds the most
  evidence for "malignant" and 0 where it holds none or evidence against. Relative within one image: a
  benign-looking image still has a hottest cell, so read the overlay next to the score;
* :func:`upsample`: bilinear, grid cells centred on equal divisions of the image (how Zhou et al. resize
  CAMs); an approximation, since a cell's receptive field covers most of the image;
* :func:`colourise`: the turbo colour map (blue → green → yellow → red);
* :func:`overlay`: alpha grows with the value, so cold regions leave the photograph visible.

:func:`to_nested_list` gives the small array that goes into a JSON result.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

#: matplotlib's "turbo" sampled at 0, 0.1, …, 1 (sRGB), interpolated linearly in between.
TURBO: tuple[tuple[int, int, int], ...] = (
    (48, 18, 59), (69, 89, 203), (62, 155, 254), (25, 213, 205), (70, 248, 132), (164, 252, 60),
    (225, 221, 55), (254, 164, 49), (240, 91, 18), (195, 37, 3), (122, 4, 3),
)
#: Opacity of the hottest pixels; half the photograph still shows through them.
MAX_ALPHA = 0.55


def _grid(cam: np.ndarray) -> np.ndarray:
    grid = np.asarray(cam, np.float64)
    if grid.ndim == 3 and grid.shape[0] == 1:
        grid = grid[0]
    if grid.ndim != 2 or min(grid.shape) < 1:
        raise ValueError(f"a malignancy map is a 2-D grid, got shape {np.shape(cam)}")
    if not np.isfinite(grid).all():
        raise ValueError("the malignancy map holds NaN or infinite values")
    return grid


def normalise(cam: np.ndarray) -> np.ndarray:
    """The positive evidence in [0, 1], relative to the map's maximum; all zeros if there is none."""
    grid = np.maximum(_grid(cam), 0.0)
    top = grid.max()
    return (grid / top if top > 0 else grid).astype(np.float32)


def _axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Output pixel centres in input-cell coordinates (half-pixel convention), clamped at the edges.
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (x - lo)


def upsample(grid: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D grid to ``size`` (square, or (height, width))."""
    g = _grid(grid)
    height, width = (size, size) if isinstance(size, int) else size
    y0, y1, wy = _axis(height, g.shape[0])
    x0, x1, wx = _axis(width, g.shape[1])
    wy, wx = wy[:, None], wx[None, :]
    top = g[y0][:, x0] * (1 - wx) + g[y0][:, x1] * wx
    bottom = g[y1][:, x0] * (1 - wx) + g[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def colourise(values: np.ndarray, palette: Sequence[tuple[int, int, int]] = TURBO) -> np.ndarray:
    """Values in [0, 1] (clipped) → uint8 RGB, same shape plus a channel axis."""
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(palette))
    colours = np.asarray(palette, np.float64)
    rgb = np.stack([np.interp(v, stops, colours[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, max_alpha: float = MAX_ALPHA) -> np.ndarray:
    """``image`` (H × W × 3 uint8, the model's input or a thumbnail of it) with the map blended over it."""
    pixels = np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"overlay needs an H x W x 3 uint8 image, got {pixels.shape} {pixels.dtype}")
    if not 0.0 <= max_alpha <= 1.0:
        raise ValueError("max_alpha is an opacity between 0 and 1")
    heat = upsample(normalise(cam), (pixels.shape[0], pixels.shape[1]))
    alpha = (max_alpha * heat)[..., None]
    blended = (1 - alpha) * pixels.astype(np.float32) + alpha * colourise(heat).astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def hottest_cell(cam: np.ndarray) -> tuple[int, int]:
    """(row, column) of the map's maximum."""
    grid = _grid(cam)
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return int(row), int(col)


def to_nested_list(cam: np.ndarray, digits: int = 4) -> list[list[float]]:
    """The raw map as rows of floats with ``digits`` significant digits: 64 numbers for an 8 × 8 grid."""
    grid = _grid(cam)
    return [[float(f"{v:.{digits}g}") for v in row] for row in grid]


def heat_layer(cam: np.ndarray, size: int | tuple[int, int], max_alpha: float = MAX_ALPHA) -> np.ndarray:
    """The map alone as an RGBA layer (H × W × 4 uint8): the colours of :func:`overlay`, with its blending
    weight as the alpha, so that laid over the image in a browser it looks like :func:`overlay`."""
    heat = upsample(normalise(cam), size)
    alpha = np.round(255 * max_alpha * heat).astype(np.uint8)
    return np.concatenate([colourise(heat), alpha[..., None]], axis=-1)


def encode_image(rgb: np.ndarray, fmt: str = "PNG", quality: int = 85) -> bytes:
    """PNG (lossless, for files; RGB or RGBA) or JPEG (small, for pages) bytes of an array. Needs Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    options = {"quality": quality} if fmt.upper() == "JPEG" else {"optimize": True}
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format=fmt, **options)
    return buf.getvalue()
