"""Errors of the consumer, on the package's one error root (skinbatch.contract)."""

from __future__ import annotations

from skinbatch.contract import ConfigurationError, InputRejected


class RequestRejected(InputRejected):
    """Bad input. Goes to the dead-letter topic with a machine-readable ``type``."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message, type_)


__all__ = ["ConfigurationError", "RequestRejected"]
