"""The scoring pipeline's part: decoding, its bounds, and how images go to Triton. ``consume`` takes it
whole; ``triage``, ``evaluate`` and ``publish`` the settings they use, with the same names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import click

from skinbatch.settings import setting

SHARED_MEMORY_MODES = ("auto", "on", "off")
MIB = 1024 * 1024


@dataclass
class PipelineSettings:
    """How images are decoded, bounded and handed to Triton (skinbatch/scoring/pipeline.py)."""

    decode_workers: int = setting("Decoding processes.", default_factory=lambda: os.cpu_count() or 1,
                                  show_default="CPUs", type=click.IntRange(min=1))
    max_infer_in_flight: int = setting("Decoded frames held for Triton (shared-memory slots of 268 KB).", 64,
                                       type=click.IntRange(min=1))
    max_infer_requests: int = setting("Requests outstanding at Triton: the first carries the frames ready "
                                      "together, the others only full batches.", 4, type=click.IntRange(min=1))
    max_infer_batch: int | None = setting("Frames per request (default: the model's max_batch_size; 1 turns "
                                          "client-side batching off).", None, type=click.IntRange(min=1))
    shared_memory: str = setting("Hand images to Triton through system shared memory: auto (when Triton runs on "
                                 "this host or shares its /dev/shm), on (or stop), off.", "auto",
                                 type=click.Choice(SHARED_MEMORY_MODES))
    max_image_bytes: int = setting("Largest image accepted, in bytes: inline, by reference, retrieved from the "
                                   "archive, or a file; larger ones are refused as too_large without being "
                                   "decoded.", 32 * MIB, type=click.IntRange(min=1))
    max_pixels: int = setting("Largest image in pixels, checked before decoding (decompression bombs).", 80_000_000,
                              type=click.IntRange(min=1))
    decode_timeout_s: float = setting("Wall-clock limit of one decode, in seconds; past it the input is "
                                      "dead-lettered decode_timeout and its worker replaced (0 disables).", 60.0,
                                      type=click.FloatRange(min=0))
    decode_memory_mb: int = setting("Memory (address space) each decode worker may use; an input that needs more "
                                    "is dead-lettered decode_memory and its worker replaced (0 disables).", 2048,
                                    type=click.IntRange(min=0))

    def decode_limits(self) -> Any:
        """Limits for the decode workers: the image size, and pixels checked before decoding."""
        from skinbatch.imaging import DecodeLimits

        return DecodeLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_pixels,
                            max_total_pixels=2 * self.max_pixels)


def megabytes(value: float) -> int:
    """An old ``--max-file-mb`` value in bytes."""
    return int(value * MIB)


__all__ = ["MIB", "SHARED_MEMORY_MODES", "PipelineSettings", "megabytes"]
