"""The mixed-precision FP16 ONNX: FP32 I/O, Softmax and normalisation in FP32, drift measured and small.

onnxruntime's CPU provider runs most FP16 ops through inserted casts, so this measures FP16 storage and
rounding, not FP16 accumulation (which only a GPU build shows).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.needs import need_module

onnx = need_module("onnx", "the converter's packages: pip install 'skinbatch[convert]'")
need_module("onnxruntime", "the converter's packages: pip install 'skinbatch[convert]'")
need_module("onnxconverter_common", "the converter's packages: pip install 'skinbatch[convert]'")

from skinbatch.converter.drift import ORT_CPU_METHOD, compare  # noqa: E402
from skinbatch.converter.export import run_onnx, sample_images  # noqa: E402
from skinbatch.converter.fp16 import fp16_fraction, preprocessing_nodes, to_mixed_fp16  # noqa: E402
from skinbatch.taxonomy import malignancy_matrix  # noqa: E402


@pytest.fixture(scope="module")
def models(converted):
    fp32 = onnx.load(str(converted.onnx_fp32))
    return fp32, to_mixed_fp16(fp32)


def _types(model) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    out.update({v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]})
    return out


def test_io_types_are_kept(models) -> None:
    _, fp16 = models
    (inp,), outs = fp16.graph.input, fp16.graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("IMAGE", onnx.TensorProto.UINT8)
    assert [(o.name, o.type.tensor_type.elem_type) for o in outs] == [
        ("TRAINING_PROBS", onnx.TensorProto.FLOAT), ("MALIGNANCY_MAP", onnx.TensorProto.FLOAT)]


def test_softmax_and_normalisation_stay_fp32(models) -> None:
    fp32, fp16 = models
    types = _types(fp16)
    softmax = [n for n in fp16.graph.node if n.op_type == "Softmax"]
    assert softmax and all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in softmax)
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in softmax)
    kept = set(preprocessing_nodes(fp32))
    assert {"Cast", "Div", "Sub"} <= {n.op_type for n in fp32.graph.node if n.name in kept}
    for node in fp16.graph.node:
        if node.name in kept and node.op_type in ("Div", "Sub"):
            assert types[node.output[0]] == onnx.TensorProto.FLOAT, node.name
    # No FP32→FP16→FP32 round trip left on the normalisation constants.
    casts = [n for n in fp16.graph.node if n.op_type == "Cast"]
    assert not any(n.name.endswith("_output_cast0") and "Constant" in n.name for n in casts)


def test_weights_are_fp16_and_file_is_half_size(models) -> None:
    fp32, fp16 = models
    assert fp16_fraction(fp16) > 0.99
    assert fp16.ByteSize() < 0.55 * fp32.ByteSize()


def test_fp16_drift_is_measured_and_small(converted, models) -> None:
    _, fp16 = models
    images = sample_images(6, seed=4)
    report = compare(
        run_onnx(converted.onnx_fp32, images), run_onnx(fp16, images), malignancy_matrix(converted.taxonomy),
        ORT_CPU_METHOD,
    )
    assert report.images == 6
    assert 0 < report.max_abs_prob < 5e-3
    assert report.max_abs_malignancy < 5e-3
    assert report.top1_agreement >= 5 / 6
    assert "not measured" in report.method and "FP16" in report.note()


def test_compare_on_known_arrays() -> None:
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    cand = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]], np.float32)
    report = compare(ref, cand, np.array([[1.0], [0.0], [0.0]]), "test")
    assert report.max_abs_prob == pytest.approx(0.1, abs=1e-6)
    assert report.max_abs_malignancy == pytest.approx(0.1, abs=1e-6)
    assert report.top1_agreement == 1.0
