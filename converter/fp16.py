"""Mixed-precision FP16 ONNX for TensorRT's strongly typed networks (TensorRT 11 has no ``BuilderFlag.FP16``).

onnxconverter-common's float16 converter rewrites the convolutions and the classifier to FP16 and keeps the
I/O types. Kept in FP32, because FP16 drift concentrates there (TensorRT #2336, #3893):

* the input cast and normalisation (everything before the first convolution): ``x / 127.5 - 1`` on 0..255
  loses about 3 significant bits in FP16 for no speed gain;
* ``Softmax``, so the served probabilities are computed and returned in FP32;
* the ``MALIGNANCY_MAP`` nodes of :mod:`skinbatch.converter.cam` (their weights too): a sum of 2048
  products whose terms cancel, which is where FP16 accumulation loses most. Only the features they read
  come from the FP16 network.

The aggregation into coarse/fine/malignancy is a separate FP32 model and is not touched here.
"""

from __future__ import annotations

import warnings

import onnx

from .cam import map_nodes
from .errors import ConverterError

#: Op types always kept in FP32, on top of onnxconverter-common's own default block list.
FP32_OPS = ("Softmax", "LogSoftmax", "Exp")


def preprocessing_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the input cast and normalisation: the nodes on the path from the graph input to the first
    convolution, plus the constants only they consume.

    Graph nodes are topologically sorted, so a node listed before the first ``Conv`` cannot depend on it.
    Nodes that do not descend from the input (the TorchScript exporter emits ``Identity`` nodes for shared
    weights there) are left alone: blocking them would keep a convolution's weights in FP32.
    Nameless nodes are named here so that the converter's ``node_block_list`` can refer to them.
    """
    nodes = list(model.graph.node)
    first_conv = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), None)
    if first_conv is None:
        raise ConverterError("the ONNX graph has no Conv node; it is not an Inception-v3 classifier")
    initializers = {init.name for init in model.graph.initializer}
    reached = {i.name for i in model.graph.input if i.name not in initializers}
    on_path: list[int] = []
    for i in range(first_conv):
        if any(name in reached for name in nodes[i].input):
            reached.update(nodes[i].output)
            on_path.append(i)
    path_inputs = {name for i in on_path for name in nodes[i].input}
    consumers: dict[str, set[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, set()).add(i)
    constants = [
        i for i in range(first_conv)
        if nodes[i].op_type == "Constant" and not nodes[i].input
        and all(out in path_inputs and consumers.get(out, set()) <= set(on_path) for out in nodes[i].output)
    ]
    names = []
    for i in sorted(on_path + constants):
        if not nodes[i].name:
            nodes[i].name = f"skinbatch_pre_{i}_{nodes[i].op_type}"
        names.append(nodes[i].name)
    return names


def to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 variant of a served-layout FP32 ONNX (``IMAGE`` uint8 → ``TRAINING_PROBS`` and, where
    present, ``MALIGNANCY_MAP``, both FP32)."""
    from onnxconverter_common import float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep = preprocessing_nodes(model) + map_nodes(model)
    try:
        with warnings.catch_warnings():
            # One warning per weight below FP16's smallest normal number: noise; the drift figures measure
            # what matters.
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(
                model,
                keep_io_types=True,
                op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS),
                node_block_list=keep,
            )
    except ValueError as exc:
        raise ConverterError(
            f"the FP16 conversion failed: {exc}. Pass an FP32 model, or use --precision fp32."
        ) from None
    _drop_round_trips(converted)
    _restore_fp32_outputs(converted)
    onnx.checker.check_model(converted)
    return converted


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_round_trips(model: onnx.ModelProto) -> None:
    """Remove FP32→FP16→FP32 cast pairs the converter leaves around blocked nodes.

    onnxconverter-common 1.14–1.16 casts a blocked node's FP32 constants to FP16 and straight back, which
    rounds the ImageNet mean/std to FP16 for nothing; skipping the pair keeps them exact.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    nodes = list(graph.node)
    drop: set[int] = set()
    for i, node in enumerate(nodes):
        if _cast_to(node) != onnx.TensorProto.FLOAT or node.output[0] in outputs:
            continue
        first = producer.get(node.input[0])
        if first is not None and _cast_to(first) == onnx.TensorProto.FLOAT16:
            rename[node.output[0]] = first.input[0]
            drop.add(i)
    if not rename:
        return
    kept = [onnx.NodeProto.FromString(n.SerializeToString()) for i, n in enumerate(nodes) if i not in drop]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
    used = {name for n in kept for name in n.input} | outputs
    kept = [n for n in kept if _cast_to(n) != onnx.TensorProto.FLOAT16 or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept)


def _restore_fp32_outputs(model: onnx.ModelProto) -> None:
    """Undo a trailing FP32→FP16 cast on a graph output.

    With the last op (Softmax) blocked, onnxconverter-common 1.16 still casts the graph output to FP16
    despite ``keep_io_types=True``; the served contract is FP32 ``TRAINING_PROBS``.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    for out in graph.output:
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        cast = producer.get(out.name)
        if cast is None or _cast_to(cast) != onnx.TensorProto.FLOAT16:
            raise ConverterError(f"the FP16 conversion made output {out.name!r} FP16; use --precision fp32")
        source = cast.input[0]
        graph.node.remove(cast)
        for node in graph.node:
            node.output[:] = [out.name if name == source else name for name in node.output]
            node.input[:] = [out.name if name == source else name for name in node.input]
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def fp16_fraction(model: onnx.ModelProto) -> float:
    """Share of the weights (by element count) stored in FP16: a sanity figure for the summary."""
    total = half = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n
        if init.data_type == onnx.TensorProto.FLOAT16:
            half += n
    return half / total if total else 0.0
