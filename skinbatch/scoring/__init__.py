"""Scoring images on the ``skin_classifier`` ensemble served by Triton, over gRPC or HTTP."""

from skinbatch.contract import ServedModelChanged, TritonUnavailable

from .client import TritonScorer
from .scores import OUTPUTS, Scores, scores_from_outputs
from .transport import Answer, ShmInput, Transport, TritonTLSError, open_transport

__all__ = ["OUTPUTS", "Answer", "Scores", "ServedModelChanged", "ShmInput", "Transport", "TritonScorer",
           "TritonTLSError", "TritonUnavailable", "open_transport", "scores_from_outputs"]
