"""The converter's one exception type: its message always says what to do next."""

from __future__ import annotations


class ConverterError(RuntimeError):
    """A conversion cannot go on; the message tells the user how to fix the input or the host."""
