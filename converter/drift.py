"""FP16 drift against FP32 on the same inputs: what a reduced-precision build changes in the scores.

Reported per build: the largest change of any training-class probability, the largest change of the
malignancy score (the number clinicians act on), and how often the top-1 training class agrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .cam import map_parity

#: How the CPU figure is obtained, to be read next to it: onnxruntime's CPU provider has FP16 kernels for
#: few ops and inserts casts around the rest, so the FP16 graph computes in FP32 on FP16-rounded weights
#: and activations. It measures storage/rounding, not FP16 accumulation as a GPU does.
ORT_CPU_METHOD = (
    "onnxruntime CPU on the mixed-precision FP16 ONNX: measures FP16 storage/rounding of weights and "
    "activations; ORT computes most FP16 ops in FP32 via inserted casts, so FP16 accumulation (as on a GPU) "
    "is not measured"
)
TENSORRT_METHOD = "TensorRT engine on the GPU against the FP32 ONNX on onnxruntime CPU"
TENSORRT_SKIP_REASON = "needs a GPU with TensorRT"


@dataclass(frozen=True)
class PrecisionDriftReport:
    """How far a reduced-precision build (FP16 ONNX, TensorRT) moves the scores from FP32 on the same images.
    Not :class:`skinbatch.status.drift.ScoreDriftReport`, the drift of served scores over time."""

    images: int
    max_abs_prob: float
    max_abs_malignancy: float
    top1_agreement: float
    method: str
    max_rel_map: float | None = None
    """Largest change of ``MALIGNANCY_MAP`` relative to its largest magnitude; None without a map."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def note(self) -> str:
        """One line for the model card."""
        cam = "" if self.max_rel_map is None else f", map max |d| / max |map| {self.max_rel_map:.2e}"
        return (
            f"FP16 drift vs FP32 on {self.images} images: max |dp| {self.max_abs_prob:.2e}, "
            f"max |d malignancy| {self.max_abs_malignancy:.2e}, top-1 agreement {self.top1_agreement:.1%}{cam} "
            f"({self.method})"
        )


def compare(reference: np.ndarray, candidate: np.ndarray, malignancy: np.ndarray, method: str,
            reference_map: np.ndarray | None = None,
            candidate_map: np.ndarray | None = None) -> PrecisionDriftReport:
    """Drift of ``candidate`` probabilities (N, K) from ``reference`` (N, K); ``malignancy`` is (K, 1) 0/1.
    With both maps (N, h, w), also the map's drift relative to the reference map's largest magnitude."""
    ref = np.asarray(reference, np.float64)
    cand = np.asarray(candidate, np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {cand.shape}")
    m = np.asarray(malignancy, np.float64)
    return PrecisionDriftReport(
        images=int(ref.shape[0]),
        max_abs_prob=float(np.max(np.abs(ref - cand))),
        max_abs_malignancy=float(np.max(np.abs(ref @ m - cand @ m))),
        top1_agreement=float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1))),
        method=method,
        max_rel_map=(None if reference_map is None or candidate_map is None
                     else map_parity(reference_map, candidate_map)),
    )
