"""``skinbatch convert``: a trained Inception-v3 → a Triton model repository (docs/architecture.md).

Heavy (torch, onnx, onnxruntime; tensorrt on GPU hosts). Nothing in ``skinbatch/`` or ``consumer/``
imports it; the CLI loads it lazily. Submodules, in data-flow order:

``checkpoint`` (weights in) → ``export`` (served FP32 ONNX, parity) → ``cam`` (the ``MALIGNANCY_MAP``
output) → ``fp16`` (mixed-precision ONNX) → ``tensorrt_engine`` (strongly typed plan) → ``drift`` (FP16 vs
FP32) → ``taxonomy_model`` (aggregation ONNX) → ``repository`` (configs and files) → ``pipeline`` (all of
it, in named steps) → ``cli``.
"""

from .errors import ConverterError
from .pipeline import ConversionSummary, ConvertOptions, convert

__all__ = ["ConversionSummary", "ConvertOptions", "ConverterError", "convert"]
