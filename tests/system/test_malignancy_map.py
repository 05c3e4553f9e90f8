"""``MALIGNANCY_MAP`` served by the real Triton (nvidia-pytriton, CPU) from repositories ``skinbatch convert``
wrote: it equals the class activation map computed in PyTorch, it points at what drives the malignant
score, and asking for it (or not) leaves the other outputs as they were.

The planted-patch model: the demo checkpoint's backbone with a final layer built here so that one
malignant class ("nodular melanoma") fires on a small dark checkerboard patch. Its weights are the
direction in Mixed_7c's feature space that separates grid cells under the patch from the others, learned
on patches at 16 positions and blind to how the plain background varies across the grid. The test
plants the patch at positions it was not built from, and the served map must peak at that grid cell.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.needs import need_module

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

grpcclient = need_module("tritonclient.grpc", "tritonclient[grpc], a dependency of skinbatch: reinstall it")
torch = need_module("torch", "the converter's packages: pip install 'skinbatch[convert]'")

from skinbatch.converter.export import sample_images  # noqa: E402
from skinbatch.modelcard import card_from_model_config  # noqa: E402
from skinbatch.taxonomy import default_taxonomy, malignancy_matrix  # noqa: E402
from tests.fixtures.triton import local_triton  # noqa: E402
from tests.unit.converter.test_cam import pytorch_cam  # noqa: E402

ENSEMBLE = "skin_classifier"
SCORES = ("TRAINING_PROBS", "COARSE_PROBS", "FINE_PROBS", "MALIGNANCY")
MAP = "MALIGNANCY_MAP"
GRID = 8
PATCH = 32
#: Where Mixed_7c's cell (i, j) is centred in the 299x299 input: stride 32, offset 37 (the valid 3x3
#: convolutions and stride-2 reductions of the stem, Mixed_6a and Mixed_7a).
CELL_STRIDE, CELL_OFFSET = 32, 37
TRAIN_CELLS = [(i, j) for i in (0, 2, 4, 6) for j in (1, 3, 5, 7)]
#: Not among TRAIN_CELLS; asymmetric pairs catch a transposed map, edge and inner cells a shifted one.
TEST_CELLS = [(1, 2), (2, 1), (3, 6), (6, 3), (5, 4), (1, 6), (6, 1), (2, 2)]
MELANOMA = "nodular melanoma"


def infer(client: Any, images: np.ndarray, names: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    inp = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    outputs = None if names is None else [grpcclient.InferRequestedOutput(n) for n in names]
    result = client.infer(ENSEMBLE, [inp], outputs=outputs)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


# -- the demo checkpoint: the map equals PyTorch's --------------------------------------------------------

@pytest.fixture(scope="module")
def client(cpu_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_triton(cpu_repository, tmp_path_factory.mktemp("triton-map")) as server:
        c = grpcclient.InferenceServerClient(server.grpc_endpoint)
        yield c
        c.close()


def test_the_card_tells_clients_to_ask_for_the_map(client: Any) -> None:
    card = card_from_model_config(client.get_model_config(ENSEMBLE, as_json=True)["config"])
    assert card.serves_malignancy_map and card.malignancy_map_grid == (GRID, GRID)
    assert card.outputs == [*SCORES, MAP]


def test_served_map_equals_the_pytorch_cam(client: Any, converted: Any) -> None:
    images = sample_images(4, seed=31)
    served = infer(client, images, (MAP,))[MAP]
    expected = pytorch_cam(converted.reference.net, images)
    assert served.shape == (4, GRID, GRID) and served.dtype == np.float32
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(served, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("names", [SCORES, ("MALIGNANCY",), ("TRAINING_PROBS",), ("COARSE_PROBS", "FINE_PROBS"),
                                   (MAP,), ("MALIGNANCY", MAP), (*SCORES, MAP), None])
def test_any_subset_with_or_without_the_map(client: Any, names: tuple[str, ...] | None) -> None:
    """Triton 2.51 fails some output subsets of ensembles whose outputs feed later steps; the map feeds none.
    A client that names only the old outputs gets exactly them, with the same values as before."""
    images = sample_images(2, seed=5)
    got = infer(client, images, names)
    assert set(got) == set(names or (*SCORES, MAP))
    everything = infer(client, images, (*SCORES, MAP))
    for name, value in got.items():
        np.testing.assert_array_equal(value, everything[name])


# -- the planted patch: the map points at the cause ------------------------------------------------------

def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Plain skin-coloured images with sensor noise."""
    base = np.array([200, 160, 140], np.float32)
    return np.clip(base + rng.normal(0, 6, (n, 299, 299, 3)), 0, 255).astype(np.uint8)


def _plant(image: np.ndarray, cell: tuple[int, int]) -> np.ndarray:
    """A dark red 32x32 checkerboard centred on grid cell ``cell``."""
    out = image.copy()
    cy, cx = (CELL_OFFSET + CELL_STRIDE * c for c in cell)
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    checker = ((yy // 4 + xx // 4) % 2)[..., None].astype(bool)
    half = PATCH // 2
    out[cy - half:cy + half, cx - half:cx + half] = np.where(checker, [30, 20, 20], [120, 40, 40])
    return out


def _features(net: Any, images: np.ndarray) -> np.ndarray:
    captured: list[Any] = []
    handle = net.Mixed_7c.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.inference_mode():
            net(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    finally:
        handle.remove()
    return captured[0].numpy().astype(np.float64)


def _patch_detector(net: Any, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Unit direction ``d`` that separates patch cells from the rest, and the pooled responses to plain
    and to patched images along it."""
    patched = np.stack([_plant(b, c) for b, c in zip(_background(rng, len(TRAIN_CELLS)), TRAIN_CELLS)])
    cells = _features(net, patched).transpose(0, 2, 3, 1)  # n, h, w, c
    under = np.zeros(cells.shape[:3], bool)
    for n, (i, j) in enumerate(TRAIN_CELLS):
        under[n, i, j] = True
    d = cells[under].mean(axis=0) - cells[~under].mean(axis=0)
    # Remove the directions along which plain skin varies from cell to cell (borders, padding): the map
    # of a plain image is then nearly flat and only the patch stands out.
    plain = _features(net, _background(rng, 6))
    variation = plain.transpose(0, 2, 3, 1).reshape(-1, plain.shape[1])
    basis = np.linalg.svd(variation - variation.mean(axis=0), full_matrices=False)[2][:60]
    d = d - basis.T @ (basis @ d)
    d /= np.linalg.norm(d)
    return d, float((plain.mean(axis=(2, 3)) @ d).mean()), float((cells.mean(axis=(1, 2)) @ d).mean())


@pytest.fixture(scope="module")
def planted_repository(demo_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skinbatch.converter import ConvertOptions, convert
    from skinbatch.converter.checkpoint import load_checkpoint

    taxonomy = default_taxonomy()
    k = len(taxonomy.training_classes)
    melanoma = taxonomy.training_classes.index(MELANOMA)
    assert malignancy_matrix(taxonomy)[melanoma, 0] == 1.0
    net = load_checkpoint(demo_checkpoint, k).model
    d, plain, patched = _patch_detector(net, np.random.default_rng(2016))
    scale = 6.0 / (patched - plain)  # the patch raises the melanoma logit by about 6
    state = net.state_dict()
    weight, bias = torch.zeros(k, d.shape[0]), torch.zeros(k)
    weight[melanoma] = torch.from_numpy(scale * d).float()
    bias[melanoma] = -scale * plain - 2.0  # a plain image: melanoma well below the other classes
    state["fc.weight"], state["fc.bias"] = weight, bias
    folder = tmp_path_factory.mktemp("planted")
    torch.save(state, folder / "planted.pt")
    convert(ConvertOptions(repository=folder / "repository", checkpoint=folder / "planted.pt", target="cpu",
                           max_batch_size=8, check_images=2))
    return folder / "repository"


def test_a_planted_patch_lights_up_its_grid_cell(planted_repository: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    plain = _background(rng, len(TEST_CELLS))
    patched = np.stack([_plant(b, c) for b, c in zip(plain, TEST_CELLS)])
    with local_triton(planted_repository, tmp_path / "triton") as server:
        c = grpcclient.InferenceServerClient(server.grpc_endpoint)
        with_patch = infer(c, patched, ("MALIGNANCY", MAP))
        without = infer(c, plain, ("MALIGNANCY", MAP))
        c.close()
    # The patch drives the malignant class ...
    assert (with_patch["MALIGNANCY"][:, 0] > 0.5).all(), with_patch["MALIGNANCY"][:, 0]
    assert (with_patch["MALIGNANCY"][:, 0] > without["MALIGNANCY"][:, 0] + 0.2).all()
    # ... and the map peaks where it was planted, clearly above the next cell.
    for cell, cam in zip(TEST_CELLS, with_patch[MAP]):
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        assert peak == cell, f"patch at {cell}, map peaks at {peak}:\n{np.round(cam, 2)}"
        ordered = np.sort(cam.ravel())
        assert (ordered[-1] - ordered[-2]) > 0.05 * (ordered[-1] - ordered[0])
