"""``MALIGNANCY_MAP``: the class activation map of P(malignant), computed inside the served graph.

Zhou et al. (2016), *Learning Deep Features for Discriminative Localization*: in a network that ends in
global average pooling and one linear layer, the evidence for class ``k`` at grid cell ``(i, j)`` is
``CAM_k(i, j) = Σ_c W[k, c] · F[c, i, j]``, with ``F`` the last convolutional features (Inception-v3:
``Mixed_7c``, 2048 × 8 × 8 for 299 × 299 input) and ``W`` the final layer's weights (no bias: the bias
does not depend on the position). Averaged over the grid, ``CAM_k`` is the logit of ``k`` minus its bias.

The served map is the CAM of the malignant node, the probability-weighted sum over the training classes
under it (``m``, the taxonomy's 0/1 malignancy column, Esteva et al. 2017, Fig. 5)::

    MALIGNANCY_MAP[n, i, j] = Σ_k p[n, k] · m[k] · CAM_k(i, j) = Σ_c ((p[n] ⊙ m) W)[c] · F[n, c, i, j]

computed in that order: a ``[N, K_m] × [K_m, C]`` product, then one contraction with the features, a few
hundred thousand multiply-adds per image against Inception's 5.7 G. The map is raw (logit units, may be
negative); displays normalise it (``skinbatch.maps``).

The head is found in the ONNX graph itself, so the same code serves exported checkpoints and users'
ONNX files: ``probs ← Softmax ← Gemm/MatMul(+Add) ← Flatten/Reshape ← GlobalAveragePool/ReduceMean ← F``.
A graph of another shape gets no map (:class:`MapUnavailable` says why), and its card says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from skinbatch.contract import Tensor

from .errors import ConverterError

#: The ensemble output, and the Inception step's.
MALIGNANCY_MAP = str(Tensor.MALIGNANCY_MAP)
PREFIX = "skinbatch/cam/"
METHOD = ("class activation map (Zhou et al. 2016) of the malignant node: sum over the training classes "
          "under it of p_k * (W_k . F), F the last convolutional features before global pooling, no bias")

#: Ops between the probabilities and the logits, and between the logits' input and the pooling.
_PROB_OPS = ("Softmax", "Identity", "Exp", "LogSoftmax")
_FLATTEN_OPS = ("Flatten", "Reshape", "Squeeze", "Identity", "Dropout")


class MapUnavailable(ConverterError):
    """The graph does not end in global pooling and one linear layer, so it has no CAM."""


@dataclass(frozen=True)
class ClassifierHead:
    """Where the CAM's ingredients live in a served-layout graph."""

    features: str
    """``[N, C, h, w]`` tensor that the global pooling averages."""
    weight: np.ndarray
    """``[K, C]``, FP32: the effective weights of the logits (Gemm's ``alpha`` and transposition applied)."""
    grid: tuple[int, int]
    pooling_node: str


@dataclass(frozen=True)
class MapInfo:
    """What the model card records about the served map."""

    tensor: str
    grid: tuple[int, int]
    channels: int
    malignant_classes: int
    features: str

    def card_entry(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "shape": list(self.grid), "channels": self.channels,
                "malignant_classes": self.malignant_classes, "features": self.features, "method": METHOD}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            value = next((a for a in node.attribute if a.name == "value"), None)
            return numpy_helper.to_array(value.t) if value is not None else None
    return None


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    attr = next((a for a in node.attribute if a.name == name), None)
    return default if attr is None else helper.get_attribute_value(attr)


def _skip_back(producers: dict[str, onnx.NodeProto], name: str,
               ops: tuple[str, ...]) -> tuple[str, onnx.NodeProto | None]:
    node = producers.get(name)
    while node is not None and node.op_type in ops:
        name = node.input[0]
        node = producers.get(name)
    return name, node


def _linear_weight(graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto],
                   logits: onnx.NodeProto | None) -> tuple[str, np.ndarray]:
    """The linear layer's input and its ``[K, C]`` weights, for Gemm, MatMul or Add(MatMul, bias)."""
    node = logits
    if node is not None and node.op_type == "Add":
        node = next((producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul"), None)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise MapUnavailable(f"the logits come from {node.op_type if node else 'no node'}, not a linear layer")
    weight = _constant(graph, node.input[1])
    if weight is None or weight.ndim != 2:
        raise MapUnavailable("the final linear layer's weights are not a constant matrix")
    weight = weight.astype(np.float32)
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0):
            raise MapUnavailable("the final Gemm transposes its input")
        weight = weight if _attr(node, "transB", 0) else weight.T
        weight = weight * np.float32(_attr(node, "alpha", 1.0))
    else:
        weight = weight.T  # MatMul: x [N, C] @ W [C, K]
    return node.input[0], np.ascontiguousarray(weight)


def _shape(model: onnx.ModelProto, name: str) -> list[int | None]:
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        if info.name == name:
            dims = info.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return []


def find_classifier_head(model: onnx.ModelProto, probs: str = Tensor.TRAINING_PROBS.value) -> ClassifierHead:
    """Locate features, pooling and classifier weights behind ``probs``; :class:`MapUnavailable` if absent."""
    graph = model.graph
    producers = _producers(graph)
    logits_name, logits = _skip_back(producers, probs, _PROB_OPS)
    pooled, weight = _linear_weight(graph, producers, logits)
    _, pooling = _skip_back(producers, pooled, _FLATTEN_OPS)
    if pooling is None or pooling.op_type not in ("GlobalAveragePool", "ReduceMean"):
        raise MapUnavailable(
            f"the classifier's input comes from {pooling.op_type if pooling else 'the graph input'}, "
            "not global average pooling")
    if pooling.op_type == "ReduceMean":
        axes = _attr(pooling, "axes", None)
        if axes is None and len(pooling.input) > 1:
            constant = _constant(graph, pooling.input[1])
            axes = None if constant is None else constant.tolist()
        if axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            raise MapUnavailable("the ReduceMean before the classifier does not average over height and width")
    features = pooling.input[0]
    shape = _shape(model, features)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise MapUnavailable(f"the pooled features {features!r} have no static [C, h, w] shape ({shape})")
    channels, height, width = (int(d) for d in shape[1:])  # type: ignore[arg-type]
    if weight.shape[1] != channels:
        raise MapUnavailable(f"the classifier takes {weight.shape[1]} inputs but the features have {channels} channels")
    return ClassifierHead(features=features, weight=weight, grid=(height, width), pooling_node=pooling.name)


def malignant_indices(malignancy: np.ndarray) -> np.ndarray:
    """Indices of the training classes under the malignant node (the 0/1 column of the taxonomy)."""
    column = np.asarray(malignancy, np.float64).reshape(-1)
    if not np.isin(column, (0.0, 1.0)).all():
        raise ConverterError("internal: the malignancy matrix must be 0/1")
    return np.flatnonzero(column).astype(np.int64)


def map_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes this module added: kept in FP32 by the FP16 conversion."""
    return [n.name for n in model.graph.node if n.name.startswith(PREFIX)]


def add_malignancy_map(model: onnx.ModelProto, malignancy: np.ndarray,
                       probs: str = Tensor.TRAINING_PROBS.value) -> tuple[onnx.ModelProto, MapInfo]:
    """A copy of ``model`` with the extra output ``MALIGNANCY_MAP`` FP32 ``[N, h, w]``."""
    head = find_classifier_head(model, probs)
    indices = malignant_indices(malignancy)
    if len(indices) == 0:
        raise MapUnavailable("no training class lies under the malignant node")
    if int(indices.max()) >= head.weight.shape[0]:
        raise ConverterError(
            f"the taxonomy has more training classes than the network's {head.weight.shape[0]} outputs")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    channels = head.weight.shape[1]
    height, width = head.grid
    p = PREFIX
    graph.initializer.extend([
        numpy_helper.from_array(indices, p + "malignant_classes"),
        # Only the malignant rows: the product below is [N, K_m] x [K_m, C].
        numpy_helper.from_array(head.weight[indices], p + "weights"),
        numpy_helper.from_array(np.array([0, 1, channels], np.int64), p + "shape_weights"),
        numpy_helper.from_array(np.array([0, channels, height * width], np.int64), p + "shape_features"),
        numpy_helper.from_array(np.array([0, height, width], np.int64), p + "shape_map"),
    ])
    graph.node.extend([
        helper.make_node("Gather", [probs, p + "malignant_classes"], [p + "probs"], axis=1, name=p + "Gather"),
        helper.make_node("MatMul", [p + "probs", p + "weights"], [p + "channel_weights"], name=p + "MatMulWeights"),
        helper.make_node("Reshape", [p + "channel_weights", p + "shape_weights"], [p + "row"],
                         name=p + "ReshapeWeights"),
        helper.make_node("Reshape", [head.features, p + "shape_features"], [p + "features"],
                         name=p + "ReshapeFeatures"),
        helper.make_node("MatMul", [p + "row", p + "features"], [p + "cells"], name=p + "MatMulFeatures"),
        helper.make_node("Reshape", [p + "cells", p + "shape_map"], [MALIGNANCY_MAP], name=p + "ReshapeMap"),
    ])
    graph.output.append(helper.make_tensor_value_info(MALIGNANCY_MAP, TensorProto.FLOAT, ["batch", height, width]))
    onnx.checker.check_model(model)
    info = MapInfo(tensor=MALIGNANCY_MAP, grid=head.grid, channels=channels, malignant_classes=len(indices),
                   features=head.features)
    return model, info


def has_malignancy_map(model: onnx.ModelProto) -> bool:
    return any(o.name == MALIGNANCY_MAP for o in model.graph.output)


# -- references, for the converter's own parity check -----------------------------------------------------

def torch_cam(served: Any, images: np.ndarray, malignancy: np.ndarray, chunk: int = 4) -> np.ndarray:
    """The PyTorch map of a :class:`~skinbatch.converter.export.ServedInception` on uint8 NHWC images:
    ``Mixed_7c`` taken with a forward hook, ``fc.weight`` from the module."""
    import torch

    net = served.net
    captured: list[torch.Tensor] = []
    handle = net.Mixed_7c.register_forward_hook(lambda _m, _i, out: captured.append(out))
    indices = torch.from_numpy(malignant_indices(malignancy))
    outs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), chunk):
                captured.clear()
                probs = served(torch.from_numpy(np.ascontiguousarray(images[start:start + chunk])))
                weights = probs[:, indices] @ net.fc.weight[indices]
                outs.append(torch.einsum("nc,nchw->nhw", weights, captured[0]).numpy())
    finally:
        handle.remove()
    return np.concatenate(outs).astype(np.float32)


def map_parity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Largest difference relative to the largest magnitude of the reference: CAMs are in logit units
    summed over 2048 channels, so an absolute tolerance would mean different things for different models."""
    scale = max(float(np.max(np.abs(reference))), 1e-12)
    return float(np.max(np.abs(np.asarray(reference, np.float64) - candidate))) / scale


def numpy_cam(model: onnx.ModelProto, images: np.ndarray, malignancy: np.ndarray) -> np.ndarray:
    """The map of a graph *without* the map output, computed in numpy from its features (read by
    onnxruntime) and its classifier weights: the reference for graphs that did not come from PyTorch."""
    from .export import OUTPUT, run_onnx_outputs

    head = find_classifier_head(model)
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output.append(helper.make_tensor_value_info(head.features, TensorProto.FLOAT, None))
    out = run_onnx_outputs(probe, images, (OUTPUT, head.features))
    indices = malignant_indices(malignancy)
    weights = out[OUTPUT][:, indices].astype(np.float64) @ head.weight[indices].astype(np.float64)
    return np.einsum("nc,nchw->nhw", weights, out[head.features].astype(np.float64)).astype(np.float32)
