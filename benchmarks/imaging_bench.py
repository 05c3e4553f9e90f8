#!/usr/bin/env python
"""Imaging throughput: skinbatch's decode path against the naive path, in one run.

Naive path: full-resolution decode (Pillow for JPEG/PNG, pydicom ``pixel_array`` for DICOM), EXIF
orientation, then one Pillow resize to the model input.
skinbatch path: ``decode(data, target=p)`` (DCT-domain downscaling where it applies) then ``preprocess``.

Inputs are synthesised (smooth colour gradients, skin-like texture, lesion-like blobs and sensor
noise), because a flat image compresses unrealistically well and would flatter every decoder.

Example:
    python benchmarks/imaging_bench.py --seconds 3 --workers 1 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from skinbatch.imaging import Preprocessing, decode, preprocess
from skinbatch.imaging.preprocess import crop_box, resize_image

# -- synthetic inputs ---------------------------------------------------------------------------------


def synth_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: skin-toned gradients, pores, lesions, hair and sensor noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal([200, 150, 125], [25, 20, 20], size=(9, 12, 3)).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(base, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(6):  # lesion-like blobs
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        r = rng.uniform(0.03, 0.12) * min(width, height)
        colour = tuple(int(c) for c in rng.normal([110, 70, 55], 20).clip(0, 255))
        draw.ellipse([cx - r, cy - r * rng.uniform(0.6, 1.0), cx + r, cy + r], fill=colour)
    for _ in range(150):  # hairs
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        dx, dy = rng.normal(0, 0.08 * width), rng.normal(0, 0.08 * height)
        draw.line([x, y, x + dx, y + dy], fill=(60, 45, 35), width=max(1, width // 1500))
    im = im.filter(ImageFilter.GaussianBlur(radius=max(1.0, width / 1500)))
    arr = np.asarray(im).astype(np.int16)
    # Pores: mid-frequency texture, made small and upsampled so it costs little to synthesise.
    tex = Image.effect_noise((width // 3, height // 3), 40).resize((width, height), Image.Resampling.BILINEAR)
    arr += (np.asarray(tex).astype(np.int16) - 128)[:, :, None] // 6
    arr += rng.normal(0, 3.0, size=arr.shape).astype(np.int16)  # sensor noise
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(im: Image.Image, quality: int, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    kwargs = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(buf, "JPEG", quality=quality, subsampling="4:2:0", **kwargs)
    return buf.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def dicom_jpeg_bytes(jpeg: bytes, width: int, height: int) -> bytes:
    """A VL Photographic Image instance whose single frame is the given JPEG (JPEG Baseline)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "XC"
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# -- the two paths ------------------------------------------------------------------------------------


def naive(data: bytes, kind: str, p: Preprocessing) -> np.ndarray:
    if kind == "dicom":
        import pydicom

        arr = pydicom.dcmread(io.BytesIO(data)).pixel_array  # full decode, YBR -> RGB
        im = Image.fromarray(arr, "RGB")
    else:
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    return np.asarray(resize_image(im, crop_box(im.width, im.height, p), p))


def ours(data: bytes, kind: str, p: Preprocessing) -> np.ndarray:
    return preprocess(decode(data, target=p).arrays[0], p)


# -- measurement --------------------------------------------------------------------------------------


def paired_rates(
    a: Callable[[], object], b: Callable[[], object], seconds: float, rounds: int = 5
) -> tuple[float, float]:
    """Images per second of ``a`` and ``b``, measured in alternating rounds so that background load
    hits both alike; each figure is the best round (as ``timeit`` advises: slower rounds measure the
    other tenants of the machine, not the code)."""
    a(), b()  # warm-up: imports, allocator
    ra, rb = [], []
    for _ in range(rounds):
        for fn, out in ((a, ra), (b, rb)):
            reps, t0 = 0, time.perf_counter()
            while True:
                fn()
                reps += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds / rounds and reps >= 2:
                    break
            out.append(reps / elapsed)
    return max(ra), max(rb)


_WORKER_CASE: tuple[bytes, str, Preprocessing] | None = None


def _init_worker(data: bytes, kind: str, p: Preprocessing) -> None:
    global _WORKER_CASE
    _WORKER_CASE = (data, kind, p)


def _one(_: int) -> int:
    assert _WORKER_CASE is not None
    data, kind, p = _WORKER_CASE
    ours(data, kind, p)
    return 1


def scaled_rate(data: bytes, kind: str, p: Preprocessing, workers: int, pool: str, n: int) -> float:
    if pool == "process":
        ex = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(data, kind, p))
    else:
        _init_worker(data, kind, p)
        ex = ThreadPoolExecutor(workers)
    with ex:
        list(ex.map(_one, range(workers * 2)))  # warm-up every worker
        t0 = time.perf_counter()
        done = sum(ex.map(_one, range(n)))
        return done / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="time per path and case, split into --rounds alternating rounds; the best round counts "
                         "(default 3)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case (default 5)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts for scaling (default 1 2)")
    ap.add_argument("--scale-images", type=int, default=60, help="images per scaling measurement (default 60)")
    ap.add_argument("--size", type=int, default=299, help="model input size (default 299)")
    ap.add_argument("--resize", default="center_crop", choices=["center_crop", "whole"])
    ap.add_argument("--interpolation", default="bilinear", choices=["bilinear", "bicubic", "lanczos", "nearest"])
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args(argv)
    p = Preprocessing(size=args.size, resize=args.resize, interpolation=args.interpolation)

    print("synthesising inputs ...", file=sys.stderr)
    photo12 = synth_photo(4032, 3024, seed=1)
    photo4 = synth_photo(2400, 1800, seed=2)
    jpeg12 = jpeg_bytes(photo12, 92, orientation=6)
    cases = [
        ("jpeg 12 MP (4032x3024, q92, EXIF 6)", "jpeg", jpeg12),
        ("jpeg 4 MP dermoscopy (2400x1800, q95)", "jpeg", jpeg_bytes(photo4, 95)),
        ("DICOM JPEG Baseline 12 MP (same picture)", "dicom", dicom_jpeg_bytes(jpeg_bytes(photo12, 92), 4032, 3024)),
        ("png 4 MP (2400x1800, 8-bit RGB)", "png", png_bytes(photo4)),
    ]
    del photo12, photo4

    rows = []
    for name, kind, data in cases:
        print(f"measuring {name} ...", file=sys.stderr)
        a, b = naive(data, kind, p), ours(data, kind, p)
        mad = float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
        r_naive, r_ours = paired_rates(lambda: naive(data, kind, p), lambda: ours(data, kind, p), args.seconds,
                                       args.rounds)
        rows.append({"case": name, "bytes": len(data), "naive_img_s": r_naive, "ours_img_s": r_ours,
                     "speedup": r_ours / r_naive, "mad": mad, "reduction": decode(data, target=p).reduction})

    scaling = []
    for pool in ("process", "thread"):
        for w in args.workers:
            print(f"scaling: {w} {pool}(es) ...", file=sys.stderr)
            scaling.append({"pool": pool, "workers": w,
                            "img_s": scaled_rate(jpeg12, "jpeg", p, w, pool, args.scale_images)})

    info = {"python": platform.python_version(), "cpus": os.cpu_count(), "preprocessing": p.to_dict(),
            "pillow": Image.__version__, "load_average": os.getloadavg()}
    if args.json:
        print(json.dumps({"info": info, "cases": rows, "scaling": scaling}, indent=1))
        return 0
    print(f"preprocessing {p.to_dict()}; Python {info['python']}, Pillow {info['pillow']}, {info['cpus']} CPUs, "
          f"load average at the end {info['load_average'][0]:.2f}")
    print()
    print("| case | size | naive img/s/core | skinbatch img/s/core | speed-up | DCT reduction | MAD vs naive |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['bytes'] / 1e6:.2f} MB | {r['naive_img_s']:.1f} | {r['ours_img_s']:.1f} | "
              f"{r['speedup']:.1f}× | 1/{r['reduction']} | {r['mad']:.2f} |")
    print()
    print("Scaling, skinbatch path on the 12 MP JPEG:")
    print()
    print("| pool | workers | img/s | vs 1 worker |")
    print("|---|---:|---:|---:|")
    for pool in ("process", "thread"):
        base = next(s["img_s"] for s in scaling if s["pool"] == pool)
        for s in scaling:
            if s["pool"] == pool:
                print(f"| {pool} | {s['workers']} | {s['img_s']:.1f} | {s['img_s'] / base:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
