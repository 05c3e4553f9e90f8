"""``MALIGNANCY_MAP`` in the served graph: found in exported and users' graphs, equal to the CAM computed
independently, FP32 in the FP16 graph, and absent (with the reason) where the graph has no CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.needs import need_module

torch = need_module("torch", "the converter's packages: pip install 'skinbatch[convert]'")
onnx = need_module("onnx", "the converter's packages: pip install 'skinbatch[convert]'")
need_module("onnxruntime", "the converter's packages: pip install 'skinbatch[convert]'")

from skinbatch.converter.cam import (  # noqa: E402
    MALIGNANCY_MAP,
    MapUnavailable,
    add_malignancy_map,
    find_classifier_head,
    map_nodes,
    numpy_cam,
)
from skinbatch.converter.export import adapt_onnx, run_onnx_outputs, sample_images  # noqa: E402
from skinbatch.taxonomy import default_taxonomy, malignancy_matrix  # noqa: E402

TAXONOMY = default_taxonomy()
K = len(TAXONOMY.training_classes)
MALIGNANT = malignancy_matrix(TAXONOMY)


def pytorch_cam(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Zhou et al.'s CAM of the malignant node, straight from torchvision's module: Mixed_7c by forward hook,
    the softmax of its own logits, fc.weight without bias."""
    features: list[torch.Tensor] = []
    handle = net.Mixed_7c.register_forward_hook(lambda _m, _i, out: features.append(out))
    try:
        with torch.inference_mode():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            probs = torch.softmax(net(x), dim=1).double()
    finally:
        handle.remove()
    f = features[0].double()
    with torch.no_grad():
        cams = torch.einsum("kc,nchw->nkhw", net.fc.weight.double(), f)
        m = torch.from_numpy(MALIGNANT[:, 0]).double()
        return torch.einsum("nk,k,nkhw->nhw", probs, m, cams).numpy()


def test_head_of_the_exported_inception(converted) -> None:
    head = find_classifier_head(onnx.load(str(converted.onnx_fp32)))
    assert head.grid == (8, 8) and "Mixed_7c" in head.features
    np.testing.assert_array_equal(head.weight, converted.reference.net.fc.weight.detach().numpy())


def test_served_graph_map_equals_pytorch_cam(converted) -> None:
    images = sample_images(3, seed=13)
    got = run_onnx_outputs(converted.onnx_fp32, images, (MALIGNANCY_MAP,))[MALIGNANCY_MAP]
    expected = pytorch_cam(converted.reference.net, images)
    assert got.shape == (3, 8, 8) and got.dtype == np.float32
    assert np.abs(expected).max() > 1e-2, "a map of zeros would pass anything"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # Different images, different maps: the map is not a constant of the weights.
    assert np.abs(got[0] - got[1]).max() > 1e-3


def test_map_weights_and_nodes_stay_fp32_in_the_fp16_graph(converted) -> None:
    need_module("onnxconverter_common", "the converter's packages: pip install 'skinbatch[convert]'")
    from skinbatch.converter.fp16 import to_mixed_fp16

    fp16 = to_mixed_fp16(onnx.load(str(converted.onnx_fp32)))
    weights = {i.name: i.data_type for i in fp16.graph.initializer}
    assert weights["skinbatch/cam/weights"] == onnx.TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(fp16)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    names = set(map_nodes(fp16))
    matmuls = [n for n in fp16.graph.node if n.name in names and n.op_type == "MatMul"]
    assert len(matmuls) == 2 and all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in matmuls)
    images = sample_images(2, seed=4)
    fp32_map = run_onnx_outputs(converted.onnx_fp32, images, (MALIGNANCY_MAP,))[MALIGNANCY_MAP]
    fp16_map = run_onnx_outputs(fp16, images, (MALIGNANCY_MAP,))[MALIGNANCY_MAP]
    assert fp16_map.dtype == np.float32
    assert np.abs(fp16_map - fp32_map).max() < 2e-2 * np.abs(fp32_map).max()


# -- users' graphs ---------------------------------------------------------------------------------------

class _Head(torch.nn.Module):
    """A small conv net standing in for a user's classifier, with the head in one of several forms."""

    def __init__(self, form: str) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 16, 7, stride=8)
        self.fc = torch.nn.Linear(16, K)
        self.form = form
        self.w = torch.nn.Parameter(torch.randn(16, K) * 0.3)
        self.b = torch.nn.Parameter(torch.randn(K) * 0.1)
        self.flat = torch.nn.Linear(16 * 37 * 37, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))
        if self.form == "reduce_mean":  # mean over H, W, then Gemm
            return self.fc(f.mean(dim=(2, 3)))
        if self.form == "matmul_add":  # global pooling, then x @ W + b
            return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(f, 1), 1) @ self.w + self.b
        return self.flat(torch.flatten(f, 1))  # no pooling: no CAM


def _user_onnx(tmp_path: Path, form: str):
    path = tmp_path / f"{form}.onnx"
    torch.onnx.export(_Head(form).eval(), (torch.zeros(1, 3, 299, 299),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                      opset_version=17)
    served, _ = adapt_onnx(onnx.load(str(path)), K)
    return served


@pytest.mark.parametrize("form", ["reduce_mean", "matmul_add"])
def test_users_graph_gets_a_map_equal_to_its_cam(tmp_path: Path, form: str) -> None:
    served = _user_onnx(tmp_path, form)
    with_map, info = add_malignancy_map(served, MALIGNANT)
    assert info.grid == (37, 37) and info.channels == 16 and info.malignant_classes == int(MALIGNANT.sum())
    images = sample_images(2, seed=3)
    got = run_onnx_outputs(with_map, images, (MALIGNANCY_MAP,))[MALIGNANCY_MAP]
    np.testing.assert_allclose(got, numpy_cam(served, images, MALIGNANT), atol=1e-5)
    # And from first principles: the mean of the map is Σ_k p_k m_k (logit_k − bias_k).
    net = _Head(form).eval()
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        logits = net(x).double()
    bias = (net.fc.bias if form == "reduce_mean" else net.b).detach().double()
    probs = torch.softmax(logits, dim=1).numpy()
    expected_mean = (probs * MALIGNANT[:, 0] * (logits - bias).numpy()).sum(axis=1)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), expected_mean, atol=1e-4)


def test_graph_without_global_pooling_has_no_map(tmp_path: Path) -> None:
    with pytest.raises(MapUnavailable, match="not global average pooling"):
        add_malignancy_map(_user_onnx(tmp_path, "flatten"), MALIGNANT)


def test_taxonomy_without_malignant_classes_has_no_map(converted) -> None:
    with pytest.raises(MapUnavailable, match="malignant"):
        add_malignancy_map(onnx.load(str(converted.onnx_fp32)), np.zeros((K, 1)))
