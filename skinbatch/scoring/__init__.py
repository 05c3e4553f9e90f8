"""Scoring images on the ``skin_classifier`` ensemble served by Triton."""

from .client import ServedModelChanged, TritonScorer, TritonUnavailable, grpc_target
from .scores import OUTPUTS, Scores, scores_from_outputs

__all__ = ["OUTPUTS", "Scores", "ServedModelChanged", "TritonScorer", "TritonUnavailable", "grpc_target", "scores_from_outputs"]
