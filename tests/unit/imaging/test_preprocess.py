"""Preprocessing: the model card's definition, and what it does to a frame."""

from __future__ import annotations

import numpy as np
import pytest

from skinbatch.imaging import Preprocessing, PreprocessingError, preprocess
from skinbatch.modelcard import ModelCard

from . import _factories as f

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos", "nearest"])
@pytest.mark.parametrize("resize", ["center_crop", "whole"])
def test_output_contract(interpolation: str, resize: str) -> None:
    out = preprocess(f.photo(120, 90), Preprocessing(size=64, resize=resize, interpolation=interpolation))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_center_crop_keeps_the_centre_square_and_whole_keeps_everything() -> None:
    frame = np.zeros((100, 300, 3), np.uint8)
    frame[:, :100] = (0, 0, 255)
    frame[:, 100:200] = (255, 0, 0)
    frame[:, 200:] = (0, 0, 255)
    crop = preprocess(frame, Preprocessing(size=50))
    assert (crop[:, 2:-2] == (255, 0, 0)).all()
    whole = preprocess(frame, Preprocessing(size=30, resize="whole"))
    assert (whole[:, 0] == (0, 0, 255)).all() and (whole[:, 15] == (255, 0, 0)).all()


def test_upscaling_a_small_frame() -> None:
    out = preprocess(f.photo(20, 10), Preprocessing(size=299))
    assert out.shape == (299, 299, 3)


def test_antialias_off_samples_like_half_pixel_bilinear() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    p = Preprocessing(size=16, resize="whole", antialias=False)
    out = preprocess(frame, p).astype(np.int32)
    # 4x down, half-pixel centres: output i samples source 4i + 1.5, i.e. the mean of pixels 4i+1, 4i+2.
    a = frame.astype(np.int32)
    ref = (a[1::4, 1::4] + a[1::4, 2::4] + a[2::4, 1::4] + a[2::4, 2::4]) / 4
    assert np.abs(out - ref).max() <= 1
    smooth = preprocess(frame, Preprocessing(size=16, resize="whole", antialias=True)).astype(np.int32)
    assert np.abs(smooth - ref).mean() > 5  # antialiasing averages the whole 4x4 footprint


def test_dict_round_trip_and_model_card() -> None:
    p = Preprocessing(size=224, resize="whole", interpolation="bicubic", antialias=False)
    assert Preprocessing.from_dict(p.to_dict()) == p
    card = ModelCard(
        name="m", version="1", trained=False, source={}, target="cpu", precision="fp32",
        preprocessing={**p.to_dict(), "normalization": {"mean": [0.5] * 3}}, taxonomy={}, max_batch_size=8,
    )
    assert card.preprocessing_spec() == p


@pytest.mark.parametrize(
    ("d", "needle"),
    [
        ({"resize": "stretch"}, "resize mode"),
        ({"interpolation": "area"}, "interpolation"),
        ({"size": 0}, "size"),
        ({"size": "299"}, "size"),
        ({"antialias": "yes"}, "antialias"),
        ({"colour": "rgb"}, "unknown preprocessing field"),
        ({"interpolation": "lanczos", "antialias": False}, "lanczos"),
    ],
)
def test_from_dict_rejects_unknown_values(d: dict, needle: str) -> None:
    with pytest.raises(PreprocessingError, match=needle):
        Preprocessing.from_dict(d)


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)]
)
def test_rejects_frames_that_are_not_rgb_uint8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess(bad, Preprocessing(size=8))


def test_reduced_decode_is_only_allowed_when_it_cannot_change_the_result() -> None:
    assert Preprocessing().allows_reduced_decode
    assert not Preprocessing(antialias=False).allows_reduced_decode
    assert not Preprocessing(interpolation="nearest").allows_reduced_decode
