"""The ``taxonomy`` step: training-class probabilities summed up the tree, as an FP32 ONNX graph.

``COARSE_PROBS = TRAINING_PROBS @ coarse``, ``FINE_PROBS = TRAINING_PROBS @ fine`` and
``MALIGNANCY = TRAINING_PROBS @ malignancy``, with the 0/1 matrices of :mod:`skinbatch.taxonomy`
(Esteva et al. 2017, Fig. 5: a node's probability is the sum of its descendants'). Kept out of the
Inception graph so that it stays FP32 whatever precision the network runs in.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from skinbatch.contract import Tensor
from skinbatch.taxonomy import Taxonomy, coarse_matrix, fine_matrix, malignancy_matrix

TRAINING_PROBS = Tensor.TRAINING_PROBS.value
COARSE_PROBS = Tensor.COARSE_PROBS.value
FINE_PROBS = Tensor.FINE_PROBS.value
MALIGNANCY = Tensor.MALIGNANCY.value
#: The input passed through unchanged. Triton 2.51 fails an ensemble request that asks for a subset of
#: the outputs ("unexpected deadlock, at least one output is not set") when one ensemble output is also
#: fed to a later step; so the ensemble's TRAINING_PROBS comes from this step, not from inception_v3.
TRAINING_PROBS_OUT = Tensor.TRAINING_PROBS_OUT.value
OUTPUTS = (COARSE_PROBS, FINE_PROBS, MALIGNANCY, TRAINING_PROBS_OUT)
#: Conservative, so Triton's onnxruntime backend of older releases loads it too.
OPSET = 13
IR_VERSION = 7


def taxonomy_matrices(taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    return {
        COARSE_PROBS: coarse_matrix(taxonomy),
        FINE_PROBS: fine_matrix(taxonomy),
        MALIGNANCY: malignancy_matrix(taxonomy),
    }


def build_taxonomy_onnx(taxonomy: Taxonomy) -> onnx.ModelProto:
    """An ONNX model ``TRAINING_PROBS [N,K] → COARSE_PROBS [N,3], FINE_PROBS [N,9], MALIGNANCY [N,1]``,
    plus ``TRAINING_PROBS_OUT [N,K]`` (the input, unchanged)."""
    k = len(taxonomy.training_classes)
    nodes, inits, outputs = [], [], []
    for name, matrix in taxonomy_matrices(taxonomy).items():
        weight = f"{name.lower()}_matrix"
        inits.append(numpy_helper.from_array(matrix.astype("float32"), weight))
        nodes.append(helper.make_node("MatMul", [TRAINING_PROBS, weight], [name], name=f"{name.lower()}_sum"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", int(matrix.shape[1])]))
    nodes.append(helper.make_node("Identity", [TRAINING_PROBS], [TRAINING_PROBS_OUT], name="pass_through"))
    outputs.append(helper.make_tensor_value_info(TRAINING_PROBS_OUT, TensorProto.FLOAT, ["batch", k]))
    graph = helper.make_graph(
        nodes,
        "skinbatch_taxonomy",
        [helper.make_tensor_value_info(TRAINING_PROBS, TensorProto.FLOAT, ["batch", k])],
        outputs,
        initializer=inits,
        doc_string=f"taxonomy {taxonomy.name!r} sha256 {taxonomy.sha256()}",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="skinbatch")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
