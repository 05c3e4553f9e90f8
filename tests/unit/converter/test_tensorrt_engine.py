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
    from skinbatch.converter.export import run_onnx_outputs, sample_images
    from skinbatch.converter.fp16 import to_mixed_fp16
    from skinbatch.converter.tensorrt_engine import build_engine, engine_profile, run_engine_outputs
    from skinbatch.taxonomy import malignancy_matrix

    fp16 = tmp_path / "model.fp16.onnx"
    onnx.save(to_mixed_fp16(onnx.load(str(converted.onnx_fp32))), str(fp16))
    cache = tmp_path / "timing.cache"
    build = build_engine(fp16, converted.onnx_fp32, tmp_path / "model.plan", max_batch_size=8, timing_cache=cache)
    assert cache.is_file() and build.plan.is_file()
    assert engine_profile(build.plan) == profile_shapes(8)
    assert build.outputs == ("TRAINING_PROBS", "MALIGNANCY_MAP")
    images = sample_images(8)
    reference = run_onnx_outputs(converted.onnx_fp32, images, build.outputs)
    engine = run_engine_outputs(build.plan, images, 8)
    assert engine["MALIGNANCY_MAP"].shape == (8, 8, 8)
    report = compare(reference["TRAINING_PROBS"], engine["TRAINING_PROBS"], malignancy_matrix(converted.taxonomy),
                     TENSORRT_METHOD, reference["MALIGNANCY_MAP"], engine["MALIGNANCY_MAP"])
    assert report.max_abs_prob < 1e-2 and report.top1_agreement >= 0.75
    assert report.max_rel_map is not None and report.max_rel_map < 5e-2


def test_the_fallback_build_pins_the_map_layers_to_fp32() -> None:
    """TensorRT < 10 (weak typing, BuilderFlag.FP16) could run the map's 2048-term sum in FP16; those layers,
    and only those, are pinned. A stand-in network: TensorRT itself cannot run here."""
    from types import SimpleNamespace

    from skinbatch.converter.tensorrt_engine import pin_map_fp32

    class Layer:
        def __init__(self, name: str) -> None:
            self.name, self.num_outputs, self.precision, self.output_types = name, 1, None, {}

        def set_output_type(self, index: int, dtype: str) -> None:
            self.output_types[index] = dtype

    layers = [Layer("/net/fc/Gemm"), Layer("skinbatch/cam/MatMulWeights"), Layer("skinbatch/cam/ReshapeMap")]
    outputs = [SimpleNamespace(name="TRAINING_PROBS", dtype="half"),
               SimpleNamespace(name="MALIGNANCY_MAP", dtype="half")]
    network = SimpleNamespace(num_layers=3, get_layer=layers.__getitem__, num_outputs=2, get_output=outputs.__getitem__)
    flags: list[str] = []
    config = SimpleNamespace(set_flag=flags.append)
    trt = SimpleNamespace(float32="float", BuilderFlag=SimpleNamespace(OBEY_PRECISION_CONSTRAINTS="obey"))
    assert pin_map_fp32(trt, network, config) == 2
    assert [layer.precision for layer in layers] == [None, "float", "float"]
    assert layers[2].output_types == {0: "float"} and outputs[1].dtype == "float" and outputs[0].dtype == "half"
    assert flags == ["obey"]
