"""The served ONNX: uint8 NHWC in, FP32 softmax out, parity with PyTorch ≤ 1e-5 for both normalisations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.needs import need_module

torch = need_module("torch", "the converter's packages: pip install 'skinbatch[convert]'")
onnx = need_module("onnx", "the converter's packages: pip install 'skinbatch[convert]'")
need_module("onnxruntime", "the converter's packages: pip install 'skinbatch[convert]'")

from skinbatch.converter.errors import ConverterError  # noqa: E402
from skinbatch.converter.export import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    ServedInception,
    adapt_onnx,
    export_pytorch,
    max_abs_diff,
    run_onnx,
    run_original_onnx,
    sample_images,
    torch_probs,
)

K = 45


def _io(model) -> tuple:
    (inp,), (out,) = model.graph.input, model.graph.output
    return inp, out


def test_served_onnx_interface(converted) -> None:
    model = onnx.load(str(converted.onnx_fp32))
    (inp,), (out, cam) = model.graph.input, model.graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("IMAGE", onnx.TensorProto.UINT8)
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 299, 299, 3]
    assert (out.name, out.type.tensor_type.elem_type) == ("TRAINING_PROBS", onnx.TensorProto.FLOAT)
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", K]
    assert next(n for n in model.graph.node if "TRAINING_PROBS" in n.output).op_type == "Softmax"
    # The map grid follows the input size: Mixed_7c is 8x8 for 299x299.
    assert (cam.name, cam.type.tensor_type.elem_type) == ("MALIGNANCY_MAP", onnx.TensorProto.FLOAT)
    assert [d.dim_param or d.dim_value for d in cam.type.tensor_type.shape.dim] == ["batch", 8, 8]


@pytest.mark.parametrize("batch", [1, 3])
def test_parity_with_pytorch_inception_normalisation(converted, batch: int) -> None:
    images = sample_images(batch, seed=11)
    onnx_probs = run_onnx(converted.onnx_fp32, images)
    torch_reference = torch_probs(converted.reference, images)
    assert max_abs_diff(onnx_probs, torch_reference) <= 1e-5
    np.testing.assert_allclose(onnx_probs.sum(axis=1), 1.0, atol=1e-5)
    assert converted.summary.parity_max_abs_prob <= 1e-5


def test_inception_normalisation_is_x_over_127_5_minus_1(converted) -> None:
    images = sample_images(2, seed=5)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.inference_mode():
        expected = torch.softmax(converted.reference.net(x), dim=1).numpy()
    assert max_abs_diff(run_onnx(converted.onnx_fp32, images), expected) <= 1e-5


def test_parity_with_pytorch_imagenet_normalisation(converted, tmp_path: Path) -> None:
    path = tmp_path / "imagenet.onnx"
    served = export_pytorch(converted.reference.net, path, "imagenet")
    images = sample_images(2, seed=9)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.inference_mode():
        expected = torch.softmax(served.net(x), dim=1).numpy()
    got = run_onnx(path, images)
    assert max_abs_diff(got, expected) <= 1e-5
    # Different normalisation, different scores: the option really changes the graph.
    assert max_abs_diff(got, run_onnx(converted.onnx_fp32, images)) > 1e-4


def test_unknown_normalisation_is_refused() -> None:
    with pytest.raises(ConverterError, match="inception, imagenet"):
        ServedInception(torch.nn.Identity(), "caffe")


# -- a user's ONNX ----------------------------------------------------------------------------------------

class _Tiny(torch.nn.Module):
    """A small conv classifier standing in for a user's Inception ONNX (same interface, fast)."""

    def __init__(self, classes: int = K, tail: str = "logits") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.fc = torch.nn.Linear(8, classes)
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        if self.tail == "softmax":
            return torch.softmax(y, dim=1)
        if self.tail == "log_softmax":
            return torch.log_softmax(y, dim=1)
        return y


def _export_tiny(path: Path, layout: str = "nchw", tail: str = "logits", classes: int = K, dynamic: bool = True):
    net = _Tiny(classes, tail).eval()
    module = net if layout == "nchw" else _Nhwc(net)
    shape = (1, 3, 299, 299) if layout == "nchw" else (1, 299, 299, 3)
    torch.onnx.export(
        module, (torch.zeros(shape),), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}} if dynamic else None, opset_version=17,
    )
    return net, onnx.load(str(path))


class _Nhwc(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("layout,tail",
                         [("nchw", "logits"), ("nhwc", "logits"), ("nchw", "softmax"), ("nchw", "log_softmax")])
@pytest.mark.parametrize("normalization", ["inception", "imagenet"])
def test_adapted_user_onnx_takes_uint8_and_matches(tmp_path: Path, layout: str, tail: str, normalization: str) -> None:
    net, original = _export_tiny(tmp_path / "user.onnx", layout, tail)
    adapted, notes = adapt_onnx(original, K, normalization)
    inp, out = _io(adapted)
    assert (inp.name, inp.type.tensor_type.elem_type) == ("IMAGE", onnx.TensorProto.UINT8)
    assert (out.name, out.type.tensor_type.elem_type) == ("TRAINING_PROBS", onnx.TensorProto.FLOAT)
    assert notes

    images = sample_images(3, seed=2)
    got = run_onnx(adapted, images)
    assert max_abs_diff(got, run_original_onnx(original, images, normalization)) <= 1e-5
    served = ServedInception(_Tiny(K, "logits").eval(), normalization)  # same seed, same weights
    assert max_abs_diff(got, torch_probs(served, images)) <= 1e-5


def test_user_onnx_class_mismatch_names_both_numbers(tmp_path: Path) -> None:
    _, original = _export_tiny(tmp_path / "user.onnx", classes=12)
    with pytest.raises(ConverterError) as info:
        adapt_onnx(original, K)
    assert "12" in str(info.value) and "45" in str(info.value)


def test_user_onnx_with_fixed_batch_is_refused(tmp_path: Path) -> None:
    _, original = _export_tiny(tmp_path / "user.onnx", dynamic=False)
    with pytest.raises(ConverterError, match="dynamic batch"):
        adapt_onnx(original, K)


def test_user_onnx_with_wrong_input_size_is_refused(tmp_path: Path) -> None:
    net = _Tiny().eval()
    path = tmp_path / "small.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17)
    with pytest.raises(ConverterError, match="299"):
        adapt_onnx(onnx.load(str(path)), K)
