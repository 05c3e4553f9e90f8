"""Colour management: photos with an embedded ICC profile come out in sRGB, where the model card asks.

The test images are made by LittleCMS's jpgicc from an sRGB original (converted into the profile, the
profile embedded), and from those by the other formats' own encoders, which copy the profile.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from skinbatch.imaging import Preprocessing, colour, decode
from skinbatch.modelcard import ModelCard
from tests.fixtures import icc
from tests.fixtures.icc import require_tool

from . import _factories as f

pytestmark = pytest.mark.timeout(120)

MANAGED = Preprocessing(color_management=True)
PLAIN = Preprocessing()


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, dict[str, Path]]:
    """The sRGB original (a JPEG, as decoded), and jpgicc's Adobe RGB and Display P3 versions of it."""
    folder = tmp_path_factory.mktemp("colour")
    jpgicc = require_tool("jpgicc", "liblcms2-utils")
    profiles = {"adobe": icc.adobe_rgb(), "p3": icc.display_p3(folder / "DisplayP3.icc")}
    (folder / "srgb.jpg").write_bytes(f.jpeg(f.photo(640, 480, seed=4), quality=98))
    original = decode((folder / "srgb.jpg").read_bytes()).frames[0].pixels
    for name, profile in profiles.items():
        _run(jpgicc, "-q98", "-i*sRGB", f"-o{profile}", "-e", folder / "srgb.jpg", folder / f"{name}.jpg")
    return folder, original, profiles


def _full(data: bytes, target: Preprocessing):
    """A full-resolution decode (no reduction) with the target's colour setting."""
    return colour.manage(decode(data), target.color_management)


@pytest.mark.parametrize(("name", "description", "ignored_at_least"),
                         [("adobe", "Adobe RGB (1998)", 5.0), ("p3", "Display P3", 8.0)])
def test_jpgicc_profiles_decode_to_the_srgb_original(made, name: str, description: str,
                                                     ignored_at_least: float) -> None:
    folder, original, profiles = made
    data = (folder / f"{name}.jpg").read_bytes()
    managed = _full(data, MANAGED)
    ignored = _full(data, PLAIN)
    off_managed = f.mad(managed.frames[0].pixels, original)
    off_ignored = f.mad(ignored.frames[0].pixels, original)
    # Measured: Adobe RGB 6.6 and Display P3 12.4 grey levels off when the profile is ignored; about 0.9
    # when applied. The first bound proves the comparison can fail.
    assert off_ignored > ignored_at_least, f"ignoring the profile is only {off_ignored:.1f} off"
    assert off_managed < 3.0, f"{off_managed:.2f} grey levels off with the profile applied"
    assert managed.color is not None and managed.color.applied
    assert description in managed.color.description
    assert len(managed.color.sha256) == 64
    assert ignored.color is not None and not ignored.color.applied
    assert ignored.color.reason == colour.NOT_REQUESTED
    assert np.array_equal(ignored.frames[0].pixels, decode(data).frames[0].pixels)


def _other_format(kind: str, folder: Path) -> Path:
    src = folder / "adobe.jpg"
    out = folder / f"adobe.{kind}"
    if kind == "webp":
        _run(require_tool("cwebp", "webp"), "-q", "95", "-metadata", "icc", src, "-o", out)
    elif kind == "avif":
        _run(require_tool("avifenc", "libavif-bin"), "--min", "0", "--max", "6", "-s", "8", "-y", "444", src, out)
    elif kind == "heif":
        _run(require_tool("heif-enc", "libheif-examples"), "-q", "95", "-p", "chroma=444", "-o", out, src)
    elif kind == "tiff":
        # tificc (LittleCMS) converts the sRGB original to Adobe RGB itself and embeds the profile.
        raw = folder / "srgb.raw"
        decode((folder / "srgb.jpg").read_bytes()).frames[0].pixels.tofile(raw)
        plain = folder / "srgb.tif"
        _run(require_tool("raw2tiff", "libtiff-tools"), "-M", "-w", 640, "-l", 480, "-b", 3, "-p", "rgb", raw, plain)
        _run(require_tool("tificc", "liblcms2-utils"), "-i*sRGB", f"-o{icc.adobe_rgb()}", "-e", plain, out)
    elif kind == "png":
        # ImageMagick 6 (its versioned name; `convert` may be another program on PATH) keeps the profile as iCCP.
        _run(require_tool("convert-im6.q16", "imagemagick"), src, out)
    else:
        raise AssertionError(kind)
    return out


@pytest.mark.parametrize("kind", ["webp", "avif", "heif", "tiff", "png"])
def test_every_format_s_embedded_profile_is_applied(made, kind: str) -> None:
    folder, original, _ = made
    data = _other_format(kind, folder).read_bytes()
    managed = _full(data, MANAGED)
    assert managed.icc_profile is not None, f"the {kind} encoder dropped the profile"
    assert managed.color is not None and managed.color.applied
    assert f.mad(managed.frames[0].pixels, original) < 3.0
    assert f.mad(_full(data, PLAIN).frames[0].pixels, original) > 5.0


def test_dicom_icc_profile_is_applied(made) -> None:
    folder, original, profiles = made
    adobe_pixels = decode((folder / "adobe.jpg").read_bytes()).frames[0].pixels
    ds = f.dicom_dataset([adobe_pixels])
    ds.ICCProfile = profiles["adobe"].read_bytes()
    data = f.dicom_bytes(ds)
    managed = _full(data, MANAGED)
    assert managed.color is not None and managed.color.applied and "Adobe RGB" in managed.color.description
    assert f.mad(managed.frames[0].pixels, original) < 3.0
    assert f.mad(_full(data, PLAIN).frames[0].pixels, original) > 5.0


def test_the_transform_is_applied_on_the_reduced_frames(made, tmp_path: Path) -> None:
    folder, _, profiles = made
    big = f.photo(1600, 1200, seed=6)
    (tmp_path / "big.jpg").write_bytes(f.jpeg(big, quality=98))
    out = tmp_path / "big-p3.jpg"
    _run(require_tool("jpgicc", "liblcms2-utils"), "-q98", "-i*sRGB", f"-o{profiles['p3']}", "-e",
         tmp_path / "big.jpg", out)
    reduced = decode(out.read_bytes(), target=MANAGED)
    assert reduced.reduction == 4 and reduced.color is not None and reduced.color.applied
    expected = decode((tmp_path / "big.jpg").read_bytes(), target=PLAIN)
    assert f.mad(reduced.frames[0].pixels, expected.frames[0].pixels) < 3.0


def test_one_transform_per_distinct_profile(made, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, _ = made
    built: list[str] = []
    real = colour._build
    monkeypatch.setattr(colour, "_cache", type(colour._cache)())
    monkeypatch.setattr(colour, "_build", lambda data, sha: built.append(sha) or real(data, sha))
    for _ in range(3):
        for name in ("adobe", "p3"):
            decode((folder / f"{name}.jpg").read_bytes(), target=MANAGED)
    assert len(built) == 2 and len(set(built)) == 2


def test_no_profile_means_srgb_untouched() -> None:
    data = f.jpeg(f.photo(64, 48))
    img = decode(data, target=MANAGED)
    assert img.color is None and img.icc_profile is None
    assert np.array_equal(img.frames[0].pixels, decode(data, target=PLAIN).frames[0].pixels)


def test_an_unreadable_profile_is_reported_not_fatal() -> None:
    ds = f.dicom_dataset([f.photo(32, 24)])
    ds.ICCProfile = b"\x00" * 200
    img = decode(f.dicom_bytes(ds), target=MANAGED)
    assert img.color is not None and not img.color.applied and "unreadable" in img.color.reason


def test_the_model_card_field_sets_colour_management() -> None:
    base = dict(name="m", version="1", trained=True, source={}, target="cpu", precision="fp32",
                preprocessing={"size": 299, "resize": "center_crop", "interpolation": "bilinear",
                               "antialias": True, "normalization": "inception"},
                taxonomy={}, max_batch_size=8, format="skinbatch-model-card/1")
    old = ModelCard.from_dict(dict(base))  # a card written before the field: profiles stay ignored
    assert old.color_managed_input is False and old.preprocessing_spec().color_management is False
    new = ModelCard.from_dict({**base, "color_managed_input": True})
    spec = new.preprocessing_spec()
    assert spec.color_management is True
    assert Preprocessing.from_dict(spec.to_dict()) == spec  # what the consumer hands its decode workers


def test_the_model_input_and_the_result_name_the_profile(made) -> None:
    from skinbatch.consumer.service import _input_info
    from skinbatch.imaging import DecodeLimits
    from skinbatch.imaging.model_input import prepare_model_input

    folder, _, _ = made
    out = prepare_model_input((folder / "p3.jpg").read_bytes(), MANAGED, DecodeLimits())
    assert out.ok and out.color is not None
    assert out.color["applied"] is True and out.color["description"] == "Display P3"
    info = _input_info(out)
    assert info["color_profile"] == out.color and len(info["color_profile"]["sha256"]) == 64
    plain = prepare_model_input(f.jpeg(f.photo(64, 48)), MANAGED, DecodeLimits())
    assert plain.color is None and "color_profile" not in _input_info(plain)
