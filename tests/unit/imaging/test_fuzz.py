"""Mutated real files: truncations, bit flips, wrong lengths, inserted and deleted bytes.

Whatever the damage, ``decode`` returns frames within the limits or raises an ``ImageDecodeError``;
it never raises anything else, never hangs (per-test timeouts) and never allocates without bound
(a subprocess under an address-space limit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from skinbatch.imaging import DecodedImage, DecodeLimits, ImageDecodeError, Preprocessing, decode

from . import _factories as f

# pydicom warns about every damaged value it meets; the assertions are what matter here.
pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::UserWarning")]

LIMITS = DecodeLimits(max_bytes=4_000_000, max_pixels=4_000_000, max_total_pixels=16_000_000, max_frames=64)
DICOM_SEEDS = [
    "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG Baseline, YBR_FULL_422
    "SC_rgb_rle_2frame.dcm",  # RLE, 2 frames
    "SC_rgb_gdcm_KY.dcm",  # JPEG 2000
    "SC_rgb_jls_lossy_line.dcm",  # JPEG-LS
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless
    "ExplVR_BigEnd.dcm",  # big endian, planar configuration 1
    "SC_rgb_rle_16bit.dcm",
    "MR_small_jp2klossless.dcm",
]


def _seeds() -> dict[str, bytes]:
    seeds = {name: (f.PYDICOM_TEST_FILES / name).read_bytes() for name in DICOM_SEEDS}
    arr = f.photo(64, 48)
    seeds["jpeg"] = f.jpeg(arr, orientation=6)
    seeds["jpeg-progressive"] = _progressive(arr)
    seeds["png-rgb"] = f.png(Image.fromarray(arr))
    seeds["png-palette-trns"] = f.png(Image.fromarray(arr).quantize(8), transparency=0)
    seeds["png-grey16"] = f.png(Image.fromarray(arr[:, :, 0].astype(np.uint16) * 257))
    seeds["dicom-jpeg-2frame"] = f.jpeg_dicom(arr, frames=2)
    seeds["dicom-deflate"] = f.dicom([arr[:16, :16]], transfer_syntax=f.DEFLATED)
    return seeds


def _progressive(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", progressive=True, quality=90)
    return buf.getvalue()


SEEDS = _seeds()
INTERESTING = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 0x10000]


def check(data: bytes, target: Preprocessing | None = None) -> DecodedImage | ImageDecodeError:
    try:
        img = decode(data, LIMITS, target)
    except ImageDecodeError as exc:
        assert exc.type and exc.message
        out: DecodedImage | ImageDecodeError = exc
    else:
        assert img.frames, "a successful decode has at least one frame"
        total = 0
        for frame in img.frames:
            a = frame.pixels
            assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and a.flags.c_contiguous
            assert a.shape[0] * a.shape[1] <= LIMITS.max_pixels
            total += a.shape[0] * a.shape[1]
        assert total <= LIMITS.max_total_pixels
        out = img
    return out


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        if n < 8:
            break
        # Half the edits land in the first 1 KiB, where headers and lengths live.
        pos = draw(st.one_of(st.integers(0, min(n - 1, 1024)), st.integers(0, n - 1)))
        op = draw(st.sampled_from(["truncate", "flip", "length", "insert", "delete", "zero"]))
        if op == "truncate":
            del data[pos:]
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "length":
            value = draw(st.sampled_from(INTERESTING))
            width = draw(st.sampled_from([2, 4]))
            order = draw(st.sampled_from(["little", "big"]))
            data[pos : pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, order)
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos : pos + draw(st.integers(1, 64))] = bytes(min(64, n - pos))
    return bytes(data)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutations(), downscale=st.booleans())
def test_mutated_files_only_raise_typed_errors(data: bytes, downscale: bool) -> None:
    check(data, Preprocessing(size=16) if downscale else None)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_truncation_point_of_the_header(name: str) -> None:
    data = SEEDS[name]
    for cut in list(range(0, min(len(data), 400), 7)) + [len(data) // 2, len(data) - 1]:
        check(data[:cut])


@pytest.mark.parametrize("name", [n for n in SEEDS if n.endswith(".dcm") or n.startswith("dicom")])
@pytest.mark.parametrize("value", [0, 0xFFFFFFFF, 0x7FFFFFF0, 3])
def test_wrong_dicom_element_lengths(name: str, value: int) -> None:
    """Rewrite the length of the Pixel Data, Rows/Columns, and the first item of the pixel data."""
    data = bytearray(SEEDS[name])
    for tag in (b"\xe0\x7f\x10\x00", b"\x28\x00\x10\x00", b"\x28\x00\x11\x00", b"\xfe\xff\x00\xe0"):
        at = data.find(tag)
        if at >= 0:
            mutated = bytearray(data)
            mutated[at + 8 : at + 12] = value.to_bytes(4, "little")  # explicit VR OB/OW long length
            check(bytes(mutated))
            mutated = bytearray(data)
            mutated[at + 4 : at + 8] = value.to_bytes(4, "little")  # implicit VR / item length
            check(bytes(mutated))


@pytest.mark.parametrize("name", ["jpeg", "png-rgb"])
def test_wrong_segment_and_chunk_lengths(name: str) -> None:
    data = SEEDS[name]
    markers = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC4, 0xDB, 0xDA, 0xE1)]
    chunks = [data.find(t) - 4 for t in (b"IHDR", b"IDAT", b"IEND") if data.find(t) > 0]
    for at in markers + chunks:
        for value in (0, 1, 0xFFFF, 0xFFFFFFFF):
            mutated = bytearray(data)
            width = 2 if name == "jpeg" else 4
            offset = 2 if name == "jpeg" else 0
            mutated[at + offset : at + offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")
            check(bytes(mutated))


_MEMORY_PROBE = r"""
import json, random, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))
from skinbatch.imaging import decode, DecodeLimits, ImageDecodeError
from tests.unit.imaging.test_fuzz import SEEDS
rng = random.Random(1234)
limits = DecodeLimits()
outcomes = {}
for i in range(400):
    name = rng.choice(sorted(SEEDS))
    data = bytearray(SEEDS[name])
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(min(len(data), 1024))
        data[pos:pos + 4] = rng.choice(
            [b"\xff\xff\xff\xff", b"\xff\xff", b"\x00\x00\x00\x00", bytes([rng.randrange(256)])])
    try:
        decode(bytes(data), limits)
        kind = "ok"
    except ImageDecodeError as exc:
        kind = exc.type
        if "out of memory" in exc.message:
            kind = "OOM"
    outcomes[kind] = outcomes.get(kind, 0) + 1
print(json.dumps(outcomes))
"""


def test_memory_stays_bounded_under_an_address_space_limit() -> None:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE], cwd=root, capture_output=True, text=True, timeout=100
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "OOM" not in outcomes, outcomes
    assert sum(outcomes.values()) == 400
