"""Errors of the consumer. Bad input is dead-lettered; infrastructure faults are retried."""

from __future__ import annotations


class RequestRejected(Exception):
    """Bad input. Goes to the dead-letter topic with a machine-readable ``type``."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message


class ConfigurationError(Exception):
    """The consumer cannot start as configured; the message says what to change."""
