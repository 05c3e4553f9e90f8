"""TensorRT: the pure profile function here; the engine build only where a GPU with TensorRT is present."""

from __future__ import annotations

import importlib.util

import pytest

from skinbatch.converter.errors import ConverterError
from skinbatch.converter.tensorrt_engine import NEEDS_GPU, gpu_available, profile_shapes, require_tensorrt


def _tensorrt_usable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and gpu_available()


needs_tensorrt = pytest.mark.skipif(not _tensorrt_usable(), reason="needs a GPU with TensorRT")


@pytest.mark.parametrize("max_batch", [1, 7, 32, 64])
def test_profile_covers_one_to_max_batch_size(max_batch: int) -> None:
    low, opt, high = profile_shapes(max_batch)
    assert low == (1, 299, 299, 3)
    assert high == (max_batch, 299, 299, 3)
    assert opt == high


def test_profile_opt_inside_range() -> None:
    assert profile_shapes(32, 8)[1] == (8, 299, 299, 3)
    with pytest.raises(ConverterError, match="outside"):
        profile_shapes(32, 64)
    with pytest.raises(ConverterError, match="at least 1"):
        profile_shapes(0)


@pytest.mark.skipif(_tensorrt_usable(), reason="TensorRT and a GPU are present")
def test_missing_tensorrt_gives_advice() -> None:
    with pytest.raises(ConverterError) as info:
        require_tensorrt()
    message = str(info.value)
    assert "GPU host" in message and "NGC TensorRT container" in message and "same release" in message
    assert NEEDS_GPU.split("(")[0] in message


@pytest.mark.gpu
@needs_tensorrt
def test_build_engine_profile_and_drift(converted, tmp_path) -> None:
    import onnx

    from skinbatch.converter.drift import TENSORRT_METHOD, compare
    from skinbatch.converter.export import run_onnx, sample_images
    from skinbatch.converter.fp16 import to_mixed_fp16
    from skinbatch.converter.tensorrt_engine import build_engine, engine_profile, run_engine
    from skinbatch.taxonomy import malignancy_matrix

    fp16 = tmp_path / "model.fp16.onnx"
    onnx.save(to_mixed_fp16(onnx.load(str(converted.onnx_fp32))), str(fp16))
    cache = tmp_path / "timing.cache"
    build = build_engine(fp16, converted.onnx_fp32, tmp_path / "model.plan", max_batch_size=8, timing_cache=cache)
    assert cache.is_file() and build.plan.is_file()
    assert engine_profile(build.plan) == profile_shapes(8)
    images = sample_images(8)
    report = compare(run_onnx(converted.onnx_fp32, images), run_engine(build.plan, images, 8),
                     malignancy_matrix(converted.taxonomy), TENSORRT_METHOD)
    assert report.max_abs_prob < 1e-2 and report.top1_agreement >= 0.75
