"""Sample inputs that ship with installed packages or are made here: for the demo, tests and benchmarks.

No data is downloaded. pydicom's wheel carries real DICOM test files; ``get_testdata_files()`` would try
the network for more, so the folder is listed directly.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def pydicom_test_files_dir() -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_colour_files() -> list[Path]:
    """Every DICOM file in pydicom's test data with three samples per pixel and pixel data."""
    import warnings

    import pydicom

    out = []
    for path in sorted(pydicom_test_files_dir().glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                if int(ds.get("SamplesPerPixel", 1)) != 3:
                    continue
                if "PixelData" not in pydicom.dcmread(path, specific_tags=["PixelData"], force=True):
                    continue
        except Exception:  # noqa: BLE001 - pydicom also ships deliberately broken files
            continue
        out.append(path)
    return out


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image: smooth skin-toned gradients, a darker lesion, texture and noise.

    Flat or random images compress unrealistically; this one behaves like a clinical photo for JPEG.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    base = np.array([200, 150, 125], dtype=np.float32) + rng.uniform(-25, 25, 3)
    img = base[None, None, :] * (0.85 + 0.15 * np.sin(3 * x + 2 * y + rng.uniform(0, 6)))[..., None]
    cx, cy = rng.uniform(0.35, 0.65, 2)
    r = rng.uniform(0.08, 0.2)
    dist = np.sqrt((x - cx) ** 2 + ((y - cy) * height / max(width, 1)) ** 2)
    edge = np.clip((r - dist) / (0.02 + 0.03 * rng.random()), 0, 1)
    lesion = np.array([90, 55, 40], dtype=np.float32) + rng.uniform(-20, 20, 3)
    img = img * (1 - edge[..., None]) + lesion[None, None, :] * edge[..., None]
    img += 6 * np.sin(40 * x * (1 + y))[..., None] + rng.normal(0, 4, (height, width, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_jpeg(width: int = 1024, height: int = 768, seed: int = 0, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(synthetic_photo(width, height, seed)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def synthetic_png(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(synthetic_photo(width, height, seed)).save(buf, format="PNG")
    return buf.getvalue()
