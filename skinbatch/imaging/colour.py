"""Colour management: frames converted from their embedded ICC profile to sRGB with LittleCMS (Pillow's
ImageCms), where the model card asks for colour-managed input.

Phones save Display P3, cameras Adobe RGB, dermatoscopes and DICOM their own profiles; the same RGB
numbers mean different colours in each. A model trained on sRGB photos sees the colours a viewer shows
only after this conversion. Images without a profile are taken as sRGB and left alone.

Each distinct profile is parsed, and its transform built, once per process (keyed by the profile's
SHA-256) and kept in a small LRU cache. The transform runs on the frames the decoder returns, i.e. after
any reduced-size decoding, so it costs about as much as the resize (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageCms

from .result import ColorInfo, DecodedImage, Frame

CACHE_SIZE = 32
"""Distinct profiles whose transforms a process keeps; a deployment sees a handful."""

NOT_REQUESTED = "the model card does not ask for colour-managed input"


@dataclass(frozen=True)
class _Profile:
    description: str
    sha256: str
    transform: ImageCms.ImageCmsTransform | None
    """None where the profile cannot be applied to RGB frames; ``reason`` says why."""
    reason: str = ""


_cache: OrderedDict[str, _Profile] = OrderedDict()
_lock = threading.Lock()
_srgb: ImageCms.ImageCmsProfile | None = None


def manage(decoded: DecodedImage, apply: bool) -> DecodedImage:
    """``decoded`` with its ``color`` set and, where ``apply`` and the profile allow, its frames in sRGB."""
    if decoded.icc_profile is None:
        return decoded
    profile = _profile(decoded.icc_profile)
    if not apply:
        return replace(decoded, color=ColorInfo(profile.description, profile.sha256, False, NOT_REQUESTED))
    if profile.transform is None:
        return replace(decoded, color=ColorInfo(profile.description, profile.sha256, False, profile.reason))
    if decoded.monochrome:
        reason = "the image is greyscale; its RGB profile was not applied"
        return replace(decoded, color=ColorInfo(profile.description, profile.sha256, False, reason))
    frames = tuple(Frame(to_srgb(f.pixels, profile.transform), f.number) for f in decoded.frames)
    return replace(decoded, frames=frames, color=ColorInfo(profile.description, profile.sha256, True))


def to_srgb(pixels: np.ndarray, transform: ImageCms.ImageCmsTransform) -> np.ndarray:
    """One RGB ``uint8`` frame through a profile → sRGB transform."""
    out = transform.apply(Image.fromarray(np.ascontiguousarray(pixels), "RGB"))
    return np.asarray(out, dtype=np.uint8).copy()


def describe(icc: bytes) -> tuple[str, str]:
    """(description, SHA-256) of a profile, from the cache where it was seen before."""
    profile = _profile(icc)
    return profile.description, profile.sha256


def _profile(icc: bytes) -> _Profile:
    sha = hashlib.sha256(icc).hexdigest()
    with _lock:
        hit = _cache.get(sha)
        if hit is not None:
            _cache.move_to_end(sha)
            return hit
    built = _build(icc, sha)
    with _lock:
        _cache[sha] = built
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return built


def _build(icc: bytes, sha: str) -> _Profile:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception:  # noqa: BLE001 - a broken profile must not cost an image that decodes
        return _Profile("", sha, None, "the embedded ICC profile is unreadable; the pixels were taken as sRGB")
    description = _description(source)
    space = str(getattr(source.profile, "xcolor_space", "") or "").strip()
    if space != "RGB":
        reason = f"the embedded ICC profile is for {space or 'an unknown'} colour space, not RGB; not applied"
        return _Profile(description, sha, None, reason)
    try:
        transform = ImageCms.buildTransform(
            source, _srgb_profile(), "RGB", "RGB",
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            # No one-pixel cache: the same transform may run in several threads at once.
            flags=ImageCms.Flags.NOCACHE,
        )
    except Exception:  # noqa: BLE001 - a profile LittleCMS cannot use must not cost an image that decodes
        return _Profile(description, sha, None, "LittleCMS could not build a transform from the embedded profile")
    return _Profile(description, sha, transform)


def _description(profile: ImageCms.ImageCmsProfile) -> str:
    try:
        text = ImageCms.getProfileDescription(profile)
    except Exception:  # noqa: BLE001 - the description is informative only
        return ""
    return " ".join(str(text).split())[:128]


def _srgb_profile() -> ImageCms.ImageCmsProfile:
    global _srgb
    if _srgb is None:
        _srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _srgb
