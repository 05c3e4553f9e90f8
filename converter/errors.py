"""The converter's exceptions: their messages always say what to do next."""

from __future__ import annotations

from skinbatch.contract import ExitCode, SkinbatchError


class ConverterError(SkinbatchError, RuntimeError):
    """A conversion cannot go on; the message tells the user how to fix the input or the host."""

    exit_code = ExitCode.INTERNAL  # `skinbatch convert` documents 1 for a failed conversion


class TensorRTUnavailable(ConverterError):
    """This host cannot build a TensorRT plan: no ``tensorrt`` package, or no NVIDIA GPU."""

    exit_code = ExitCode.ENVIRONMENT
