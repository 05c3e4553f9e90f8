"""The taxonomy ONNX equals ``skinbatch.taxonomy.aggregate`` with the same matrices."""

from __future__ import annotations

import numpy as np

from tests.fixtures.needs import need_module

ort = need_module("onnxruntime", "the converter's packages: pip install 'skinbatch[convert]'")
need_module("onnx", "the converter's packages: pip install 'skinbatch[convert]'")

from skinbatch.converter.taxonomy_model import (  # noqa: E402
    COARSE_PROBS,
    FINE_PROBS,
    MALIGNANCY,
    TRAINING_PROBS_OUT,
    build_taxonomy_onnx,
)
from skinbatch.taxonomy import aggregate, coarse_matrix, default_taxonomy, fine_matrix, malignancy_matrix  # noqa: E402


def test_taxonomy_onnx_equals_aggregate() -> None:
    taxonomy = default_taxonomy()
    k = len(taxonomy.training_classes)
    session = ort.InferenceSession(build_taxonomy_onnx(taxonomy).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(k, 0.3), size=17).astype(np.float32)
    probs[0] = np.eye(k, dtype=np.float32)[k - 1]  # all mass on one class
    coarse, fine, malignancy, passed = session.run(
        [COARSE_PROBS, FINE_PROBS, MALIGNANCY, TRAINING_PROBS_OUT], {"TRAINING_PROBS": probs}
    )
    np.testing.assert_array_equal(passed, probs)

    np.testing.assert_allclose(coarse, aggregate(probs, coarse_matrix(taxonomy)), atol=1e-6)
    np.testing.assert_allclose(fine, aggregate(probs, fine_matrix(taxonomy)), atol=1e-6)
    np.testing.assert_allclose(malignancy, aggregate(probs, malignancy_matrix(taxonomy)), atol=1e-6)
    assert coarse.shape == (17, 3) and fine.shape == (17, 9) and malignancy.shape == (17, 1)
    np.testing.assert_allclose(coarse.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(fine.sum(axis=1), 1.0, atol=1e-5)


def test_taxonomy_onnx_is_fp32_with_dynamic_batch() -> None:
    model = build_taxonomy_onnx(default_taxonomy())
    (inp,) = model.graph.input
    assert inp.name == "TRAINING_PROBS"
    assert inp.type.tensor_type.elem_type == 1
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {o.name for o in model.graph.output} == {COARSE_PROBS, FINE_PROBS, MALIGNANCY, TRAINING_PROBS_OUT}
    assert all(o.type.tensor_type.elem_type == 1 for o in model.graph.output)
