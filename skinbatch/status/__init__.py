"""Operator status: Triton health and serving figures, consumer-group lag and dead-letter rate.

Parsing (Prometheus text, statistics JSON) and arithmetic are pure and unit-tested; ``collect`` and
``kafka_lag.KafkaProbe`` do the I/O. ``health`` is shared with triage and evaluate; exit codes are
``skinbatch.contract.ExitCode``.
"""

from skinbatch.contract import ExitCode

from .health import ModelHealth, TritonHealth, check_triton

__all__ = ["ExitCode", "ModelHealth", "TritonHealth", "check_triton"]
