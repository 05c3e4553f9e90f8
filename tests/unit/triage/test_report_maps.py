"""Malignancy maps in the triage report: rendering (skinbatch.maps), the overlays on the HTML thumbnails,
the ``--maps`` PNG files and their CSV column, and the page in a real headless Chromium."""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from skinbatch.imaging import Preprocessing
from skinbatch.maps import TURBO, colourise, hottest_cell, normalise, overlay, to_nested_list, upsample
from skinbatch.samples import synthetic_jpeg
from skinbatch.scoring import Scores
from skinbatch.triage.report import MAPS_DIR, write_reports
from skinbatch.triage.state import TriageStore
from tests.fixtures.needs import need_tool

MODEL = {"name": "demo", "version": "1", "trained": True, "weights_sha256": "w" * 64, "taxonomy_sha256": "t" * 64}
COARSE = ["benign", "malignant", "non-neoplastic"]
FINE = ["f1", "f2"]
SIZE = 299


def _single(cell: tuple[int, int], grid: int = 8) -> np.ndarray:
    """A map with one hot cell over a weak, slightly negative background."""
    cam = np.full((grid, grid), -0.05, np.float32)
    cam[cell] = 2.0
    return cam


def _hot(cell: tuple[int, int], grid: int = 8) -> np.ndarray:
    """A hot 3 x 3 block centred on ``cell``: its centre cell is at the top of the colour map throughout."""
    cam = np.full((grid, grid), -0.05, np.float32)
    cam[max(cell[0] - 1, 0):cell[0] + 2, max(cell[1] - 1, 0):cell[1] + 2] = 2.0
    return cam


def _cell_box(cell: tuple[int, int], size: int = SIZE, grid: int = 8) -> tuple[slice, slice]:
    step = size / grid
    return (slice(int(cell[0] * step), int((cell[0] + 1) * step)),
            slice(int(cell[1] * step), int((cell[1] + 1) * step)))


def _warm(pixels: np.ndarray) -> np.ndarray:
    """Pixels tinted by the top of the colour map (orange to red), which skin (about 200, 160, 140) is not."""
    r, g, b = (pixels[..., c].astype(int) for c in range(3))
    return (r - g > 50) & (r - b > 50)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(rows.mean()), float(cols.mean())


# -- rendering -----------------------------------------------------------------------------------------

def test_normalise_keeps_positive_evidence_relative_to_the_maximum() -> None:
    out = normalise(np.array([[-3.0, 0.0], [1.0, 4.0]]))
    np.testing.assert_allclose(out, [[0, 0], [0.25, 1.0]])
    assert not normalise(np.full((8, 8), -1.0)).any()
    assert normalise(np.zeros((1, 8, 8))).shape == (8, 8)  # a batch of one is accepted
    with pytest.raises(ValueError, match="2-D"):
        normalise(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        normalise(np.array([[np.nan]]))


@pytest.mark.parametrize("cell", [(0, 0), (2, 5), (5, 2), (7, 7)])
def test_upsampled_peak_lies_in_its_cell(cell: tuple[int, int]) -> None:
    big = upsample(_single(cell), SIZE)
    assert big.shape == (SIZE, SIZE)
    peak = np.unravel_index(int(np.argmax(big)), big.shape)
    rows, cols = _cell_box(cell)
    assert rows.start <= peak[0] < rows.stop and cols.start <= peak[1] < cols.stop
    np.testing.assert_allclose(upsample(np.full((8, 8), 0.3), (40, 60)), 0.3, atol=1e-6)
    assert hottest_cell(_single(cell)) == cell


def test_colour_map_ends_and_overlay_blends_only_where_the_evidence_is() -> None:
    assert tuple(colourise(np.array(0.0))) == TURBO[0] and tuple(colourise(np.array(1.0))) == TURBO[-1]
    assert colourise(np.zeros((3, 4))).shape == (3, 4, 3)
    image = np.full((SIZE, SIZE, 3), (200, 160, 140), np.uint8)
    np.testing.assert_array_equal(overlay(image, np.zeros((8, 8))), image)  # no evidence, no colour
    blended = overlay(image, _hot((2, 5)))
    rows, cols = _cell_box((2, 5))
    assert _warm(blended[rows, cols]).mean() > 0.9 and not _warm(image).any()
    np.testing.assert_array_equal(blended[-40:, :40], image[-40:, :40])  # far away: the photograph as it was
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), _hot((0, 0)))


def test_nested_list_for_json_results() -> None:
    grid = to_nested_list(np.arange(64, dtype=np.float32).reshape(8, 8) / 3)
    assert len(grid) == 8 and all(len(r) == 8 for r in grid)
    assert grid[0][1] == 0.3333 and grid[7][7] == 21.0


# -- the report ----------------------------------------------------------------------------------------

def _scores(m: float) -> Scores:
    return Scores(malignancy=m, coarse={"benign": 1 - m, "malignant": m, "non-neoplastic": 0.0},
                  fine={"f1": 0.5, "f2": 0.5}, top_classes=[("melanoma", m)],
                  training_probs=np.array([m, 1 - m], dtype=np.float32))


@pytest.fixture
def scored(tmp_path: Path) -> tuple[TriageStore, dict[str, tuple[str, int]], Path]:
    """Three real JPEGs scored 0.9, 0.6 and 0.1; the two riskiest have maps."""
    archive = tmp_path / "archive"
    archive.mkdir()
    store = TriageStore.open(tmp_path / "out", MODEL)
    keys = {}
    for name, score, seed in (("high.jpg", 0.9, 1), ("mid.jpg", 0.6, 2), ("low.jpg", 0.1, 3)):
        data = synthetic_jpeg(640, 480, seed=seed)
        path = archive / name
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        store.record_scored(sha, len(data), "jpeg", False, None, 1.0, [(1, _scores(score), 5.0)])
        store.link_path(str(path), sha, len(data), path.stat().st_mtime_ns)
        keys[name] = (sha, 1)
    store.commit()
    return store, keys, tmp_path / "out"


MAP_CELLS = {"high.jpg": (2, 5), "mid.jpg": (6, 1)}


def _report(store: TriageStore, out: Path, keys: dict[str, tuple[str, int]], with_maps: bool) -> dict[str, Path]:
    maps = {keys[name]: _hot(cell) for name, cell in MAP_CELLS.items()} if with_maps else None
    return write_reports(store, out, COARSE, FINE, Preprocessing(size=SIZE), {"files_total": 3}, maps=maps,
                         write_maps=with_maps)


def test_maps_are_overlaid_in_the_html_and_written_as_pngs(scored) -> None:
    from PIL import Image

    store, keys, out = scored
    outputs = _report(store, out, keys, with_maps=True)
    page = outputs["html"].read_text(encoding="utf-8")
    assert page.count('class="map"') == 2 and "class activation map" in page
    assert page.count("data:image/jpeg;base64,") == 3  # three thumbnails
    assert page.count("data:image/png;base64,") == 2  # two translucent map layers over them

    rows = list(csv.DictReader(outputs["csv"].open(encoding="utf-8")))
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["low.jpg"]["map_png"] == ""
    assert outputs["maps"] == out / MAPS_DIR
    for name, cell in MAP_CELLS.items():
        row = by_name[name]
        assert (row["sha256"], row["weights_sha256"]) == (keys[name][0], "w" * 64)  # traceable to bytes and weights
        png = out / row["map_png"]
        assert png.parent == out / MAPS_DIR and png.name == f"{keys[name][0]}_1.png"
        pixels = np.asarray(Image.open(png).convert("RGB"))
        assert pixels.shape == (SIZE, SIZE, 3)
        rows_, cols = _cell_box(cell)
        assert _warm(pixels[rows_, cols]).mean() > 0.5, f"{name}: no hot overlay at {cell}"
        y, x = _centroid(_warm(pixels))
        assert rows_.start <= y < rows_.stop and cols.start <= x < cols.stop, f"{name}: overlay centred at {y, x}"
    assert sorted(p.name for p in (out / MAPS_DIR).iterdir()) == sorted(f"{keys[n][0]}_1.png" for n in MAP_CELLS)


def test_without_maps_the_report_is_as_before(scored) -> None:
    store, keys, out = scored
    outputs = _report(store, out, keys, with_maps=False)
    page = outputs["html"].read_text(encoding="utf-8")
    assert 'class="map"' not in page and "class activation map" not in page
    assert "maps" not in outputs and not (out / MAPS_DIR).exists()
    assert all(r["map_png"] == "" for r in csv.DictReader(outputs["csv"].open(encoding="utf-8")))


def _screenshot(chromium: str, page: Path, shot: Path, profile: Path) -> np.ndarray:
    from PIL import Image

    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={shot}", "--window-size=1280,1200", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB"))


def test_the_overlays_render_in_headless_chromium(scored, tmp_path: Path) -> None:
    chromium = need_tool("chromium", "Debian's chromium")
    store, keys, out = scored
    plain_page = tmp_path / "plain"
    shutil.copytree(out, plain_page, ignore=shutil.ignore_patterns("*.sqlite*"))
    _report(store, plain_page, keys, with_maps=False)
    with_maps = _report(store, out, keys, with_maps=True)["html"]
    plain = _screenshot(chromium, plain_page / "triage.html", tmp_path / "plain.png", tmp_path / "p1")
    mapped = _screenshot(chromium, with_maps, tmp_path / "maps.png", tmp_path / "p2")
    assert mapped.std() > 10, "the screenshot is blank"
    # Two 160-px thumbnails each carry a hot cell of 20 x 20 px and warm surroundings: many hundreds of warm
    # pixels that the page without maps does not have (its score bars and histogram are warm in both).
    assert _warm(mapped).sum() > _warm(plain).sum() + 600, (_warm(mapped).sum(), _warm(plain).sum())
