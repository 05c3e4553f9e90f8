"""Export to the served ONNX graph: uint8 NHWC ``IMAGE`` in, FP32 softmax ``TRAINING_PROBS`` out.

The cast to float, NHWC→NCHW and the normalisation are folded into the graph, so every client sends the
same bytes it decoded and no client can get the normalisation wrong:

* ``inception`` (the default, as in Esteva et al. 2017 / Inception's own training): ``x / 127.5 - 1``;
* ``imagenet``: ``(x / 255 - mean) / std`` with torchvision's ImageNet mean and std.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from skinbatch.contract import Tensor

from .errors import ConverterError

INPUT = Tensor.IMAGE.value
OUTPUT = Tensor.TRAINING_PROBS.value
SIZE = 299
NORMALIZATIONS = ("inception", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPSET = 17
PARITY_TOLERANCE = 1e-5


def normalization_affine(normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``scale``, ``bias`` with ``normalised = x * scale + bias`` on 0..255 input."""
    if normalization == "inception":
        return np.full(3, 1 / 127.5, np.float32), np.full(3, -1.0, np.float32)
    if normalization == "imagenet":
        mean, std = np.array(IMAGENET_MEAN, np.float64), np.array(IMAGENET_STD, np.float64)
        return (1 / (255 * std)).astype(np.float32), (-mean / std).astype(np.float32)
    raise ConverterError(f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")


class ServedInception(torch.nn.Module):
    """uint8 NHWC → normalised NCHW → Inception-v3 → softmax, as one exportable module."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, net: torch.nn.Module, normalization: str = "inception") -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ConverterError(
                f"unknown normalization {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}"
            )
        self.net = net
        self.normalization = normalization
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        if self.normalization == "inception":
            x = x / 127.5 - 1.0
        else:
            x = (x / 255.0 - self.mean) / self.std
        return torch.softmax(self.net(x), dim=1)


def sample_images(n: int, seed: int = 0) -> np.ndarray:
    """Seeded uint8 NHWC test images: half noise, half smooth gradients, so both regimes are checked."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)
    for i in range(1, n, 2):
        a, b, c = rng.uniform(0, 255, size=(3, 3))
        out[i] = np.clip(a * xx[..., None] + b * yy[..., None] + c * 0.2, 0, 255).astype(np.uint8)
    return out


def torch_probs(model: ServedInception, images: np.ndarray, chunk: int = 4) -> np.ndarray:
    """The PyTorch reference: softmax over training classes, FP32, on uint8 NHWC input."""
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), chunk):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(images[start:start + chunk]))).numpy())
    return np.concatenate(outs).astype(np.float32)


def onnx_session(model: str | Path | onnx.ModelProto, threads: int = 0) -> Any:  # an onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Graph optimisations can fuse ops differently from PyTorch; keep the basic ones only so the parity
    # figure measures the exported graph, not ORT's rewrites of it.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(model: str | Path | onnx.ModelProto, images: np.ndarray, chunk: int = 4) -> np.ndarray:
    """``TRAINING_PROBS`` of a served-layout ONNX on onnxruntime CPU."""
    return run_onnx_outputs(model, images, (OUTPUT,), chunk)[OUTPUT]


def run_onnx_outputs(model: str | Path | onnx.ModelProto, images: np.ndarray, names: Sequence[str],
                     chunk: int = 4) -> dict[str, np.ndarray]:
    """The named outputs of a served-layout ONNX on onnxruntime CPU, FP32, batched in chunks."""
    session = onnx_session(model)
    outs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(images), chunk):
        for name, value in zip(names, session.run(list(names), {INPUT: images[start:start + chunk]})):
            outs[name].append(value)
    return {name: np.concatenate(values).astype(np.float32) for name, values in outs.items()}


def export_pytorch(model: torch.nn.Module, path: str | Path, normalization: str = "inception") -> ServedInception:
    """Export ``model`` (an eval-mode Inception-v3) to ``path`` with a dynamic batch dimension."""
    served = ServedInception(model, normalization).eval()
    example = torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in recent torch, but the dynamo exporter needs
        # onnxscript, which the converter does not depend on.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            served,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return served


# -- an ONNX brought by the user -------------------------------------------------------------------------

def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _elem_type(value_info: onnx.ValueInfoProto) -> int:
    return value_info.type.tensor_type.elem_type


def _rename_in_graph(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def adapt_onnx(
    model: onnx.ModelProto, num_classes: int, normalization: str = "inception"
) -> tuple[onnx.ModelProto, list[str]]:
    """Give a user's Inception ONNX the served interface; returns the new model and notes for the card.

    Accepted inputs: float NCHW ``[N,3,299,299]`` or float NHWC ``[N,299,299,3]`` (normalisation is then
    prepended, per ``normalization``), or uint8 NHWC (taken as already normalising). Outputs: ``[N,K]``
    logits (softmax appended), log-probabilities (``LogSoftmax`` last: ``Exp`` appended) or probabilities
    (``Softmax`` last: kept).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ConverterError(
            f"the ONNX has {len(inputs)} inputs and {len(graph.output)} outputs; the converter needs exactly one "
            "image input and one class-score output. Re-export the classifier alone."
        )
    inp, out = inputs[0], graph.output[0]
    in_dims, out_dims = _dims(inp), _dims(out)
    notes: list[str] = []
    if len(out_dims) != 2:
        raise ConverterError(f"the ONNX output {out.name!r} has shape {out_dims}; expected [batch, classes]")
    if not isinstance(out_dims[1], int) or out_dims[1] == 0:
        raise ConverterError(
            f"the ONNX output {out.name!r} has no static class dimension ({out_dims}); re-export with a fixed "
            "number of classes"
        )
    from .checkpoint import check_class_count

    check_class_count(out_dims[1], num_classes, "the ONNX model")
    if (len(in_dims) != 4 or isinstance(in_dims[0], int) and in_dims[0] > 0
            or isinstance(out_dims[0], int) and out_dims[0] > 0):
        raise ConverterError(
            f"the ONNX input {inp.name!r} has shape {in_dims} and output {out_dims}; the converter needs a dynamic "
            "batch dimension on both (e.g. torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}, "
            "'output': {0: 'batch'}})) so Triton can batch requests."
        )
    elem = _elem_type(inp)
    if elem == TensorProto.UINT8 and in_dims[1:] == [SIZE, SIZE, 3]:
        layout = "uint8-nhwc"
        notes.append("input ONNX already took uint8 NHWC; its own normalisation is kept as is")
    elif elem == TensorProto.FLOAT and in_dims[1:] == [3, SIZE, SIZE]:
        layout = "nchw"
    elif elem == TensorProto.FLOAT and in_dims[1:] == [SIZE, SIZE, 3]:
        layout = "nhwc"
    else:
        raise ConverterError(
            f"the ONNX input {inp.name!r} is {TensorProto.DataType.Name(elem)} {in_dims}; the converter accepts "
            f"float32 [N,3,{SIZE},{SIZE}], float32 [N,{SIZE},{SIZE},3] or uint8 [N,{SIZE},{SIZE},3]. "
            "Re-export the network for 299×299 RGB input."
        )

    prefix = "skinbatch/"
    new_nodes: list[onnx.NodeProto] = []
    if layout != "uint8-nhwc":
        scale, bias = normalization_affine(normalization)
        shape = [1, 3, 1, 1] if layout == "nchw" else [1, 1, 1, 3]
        graph.initializer.extend([
            numpy_helper.from_array(scale.reshape(shape), prefix + "scale"),
            numpy_helper.from_array(bias.reshape(shape), prefix + "bias"),
        ])
        new_nodes.append(
            helper.make_node("Cast", [INPUT], [prefix + "float"], to=TensorProto.FLOAT, name=prefix + "Cast"))
        x = prefix + "float"
        if layout == "nchw":
            new_nodes.append(
                helper.make_node("Transpose", [x], [prefix + "nchw"], perm=[0, 3, 1, 2], name=prefix + "Transpose"))
            x = prefix + "nchw"
        new_nodes.append(helper.make_node("Mul", [x, prefix + "scale"], [prefix + "scaled"], name=prefix + "Mul"))
        new_nodes.append(helper.make_node("Add", [prefix + "scaled", prefix + "bias"], [inp.name], name=prefix + "Add"))
        notes.append(f"input ONNX took float {layout.upper()}; uint8 cast and {normalization} normalisation prepended")
    else:
        _rename_in_graph(graph, inp.name, INPUT)

    producer = next((n for n in graph.node if out.name in n.output), None)
    last = producer.op_type if producer is not None else ""
    tail: list[onnx.NodeProto] = []
    if last == "Softmax":
        tail.append(helper.make_node("Identity", [out.name], [OUTPUT], name=prefix + "Identity"))
        notes.append("input ONNX ended in Softmax; its probabilities are served as they are")
    elif last == "LogSoftmax":
        tail.append(helper.make_node("Exp", [out.name], [OUTPUT], name=prefix + "Exp"))
        notes.append("input ONNX ended in LogSoftmax; Exp appended")
    else:
        # Softmax at opset < 13 flattens to 2-D from `axis`, which for a [N,K] tensor is the same thing.
        tail.append(helper.make_node("Softmax", [out.name], [OUTPUT], axis=1, name=prefix + "Softmax"))
        notes.append(f"input ONNX ended in {last or 'an input'} (taken as logits); Softmax appended")

    nodes = new_nodes + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", SIZE, SIZE, 3]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", num_classes]))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConverterError(
            f"the adapted ONNX does not validate: {exc}. Re-export the model with opset >= 13.") from None
    return model, notes


def run_original_onnx(model: onnx.ModelProto, images: np.ndarray, normalization: str) -> np.ndarray:
    """The reference for an adapted user ONNX: its own graph on numpy-normalised input, softmaxed the same way."""
    import onnxruntime as ort  # noqa: F401 - imported for the side effect of failing early

    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inp = next(i for i in graph.input if i.name not in initializers)
    in_dims = _dims(inp)
    if _elem_type(inp) == TensorProto.UINT8:
        x = images
    else:
        scale, bias = normalization_affine(normalization)
        x = images.astype(np.float32) * scale + bias
        if in_dims[1] == 3:
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=np.float32)
    session = onnx_session(model)
    y = np.concatenate([session.run(None, {inp.name: x[s:s + 4]})[0] for s in range(0, len(x), 4)]).astype(np.float64)
    producer = next((n for n in graph.node if graph.output[0].name in n.output), None)
    last = producer.op_type if producer is not None else ""
    if last == "Softmax":
        return y.astype(np.float32)
    if last == "LogSoftmax":
        return np.exp(y).astype(np.float32)
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
