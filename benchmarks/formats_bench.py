#!/usr/bin/env python
"""Decode cost of a phone's HEIC and of a colour-managed (Display P3) JPEG against the plain JPEG path,
in the same run, as ratios.

One synthetic phone photo (default 4032 × 3024, 12 MP) is saved three ways: a plain sRGB JPEG (Pillow,
quality 92), a Display P3 JPEG made from it by LittleCMS's ``jpgicc`` (profile embedded), and a HEIC made
by ``heif-enc`` (libheif-examples; quality 90). Each is taken through what the consumer does per message,
``decode(data, target=p)`` then ``preprocess``, with the model card's colour management on. Rounds
interleave the three inputs, so load on the machine affects them alike; the median per input is
reported, and its ratio to the plain JPEG. The ICC transform alone is also timed on a 299 × 299 frame
and on the frame the reduced JPEG decode hands it.

Example:
    python benchmarks/formats_bench.py --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.imaging_bench import jpeg_bytes, synth_photo  # noqa: E402
from skinbatch.imaging import Preprocessing, colour, decode, preprocess  # noqa: E402
from tests.fixtures.icc import display_p3  # noqa: E402


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"needs {name} (apt-get install -y libheif-examples liblcms2-utils)")
    return path


def make_inputs(width: int, height: int, folder: Path) -> dict[str, bytes]:
    im = synth_photo(width, height, seed=1)
    plain = folder / "plain.jpg"
    plain.write_bytes(jpeg_bytes(im, 92))
    p3 = folder / "p3.jpg"
    subprocess.run([_tool("jpgicc"), "-q92", "-i*sRGB", f"-o{display_p3(folder / 'p3.icc')}", "-e", str(plain),
                    str(p3)], check=True, capture_output=True)
    im.save(folder / "src.png")
    heic = folder / "photo.heic"
    subprocess.run([_tool("heif-enc"), "-q", "90", "-o", str(heic), str(folder / "src.png")], check=True,
                   capture_output=True)
    return {"jpeg": plain.read_bytes(), "jpeg_p3_managed": p3.read_bytes(), "heic": heic.read_bytes()}


def one(data: bytes, p: Preprocessing) -> float:
    t0 = time.perf_counter()
    img = decode(data, target=p)
    preprocess(img.frames[0].pixels, p)
    return (time.perf_counter() - t0) * 1000


def transform_ms(icc: bytes, shape: tuple[int, int], repeat: int = 50) -> float:
    """Median ms of the cached profile → sRGB transform on one frame of ``shape``."""
    transform = colour._profile(icc).transform
    assert transform is not None
    frame = np.random.default_rng(0).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        colour.to_srgb(frame, transform)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=4032)
    ap.add_argument("--height", type=int, default=3024)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    p = Preprocessing(color_management=True)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(args.width, args.height, Path(tmp))
    for data in inputs.values():  # warm-up: imports, the HEIF opener, the cached transform
        one(data, p)
    times: dict[str, list[float]] = {k: [] for k in inputs}
    for _ in range(args.rounds):
        for name, data in inputs.items():
            times[name].append(one(data, p))
    median = {k: statistics.median(v) for k, v in times.items()}
    managed = decode(inputs["jpeg_p3_managed"], target=p)
    icc = Image.open(__import__("io").BytesIO(inputs["jpeg_p3_managed"])).info["icc_profile"]
    reduced = managed.frames[0].pixels.shape[:2]
    print(json.dumps({
        "size": [args.width, args.height], "rounds": args.rounds,
        "bytes": {k: len(v) for k, v in inputs.items()},
        "median_ms": {k: round(v, 1) for k, v in median.items()},
        "ratio_to_jpeg": {k: round(v / median["jpeg"], 2) for k, v in median.items()},
        "p3_profile_applied": bool(managed.color and managed.color.applied),
        "reduced_frame": list(reduced), "jpeg_reduction": managed.reduction,
        "icc_transform_ms": {"299x299": round(transform_ms(icc, (299, 299)), 3),
                             f"{reduced[1]}x{reduced[0]}": round(transform_ms(icc, reduced), 3)},
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }, indent=1))


if __name__ == "__main__":
    main()
