"""The ``cpu`` repository written by ``skinbatch convert`` on the real Triton (nvidia-pytriton, CPU).

Checks the whole contract of docs/architecture.md end to end: the ensemble loads, TRAINING_PROBS equals
PyTorch's softmax, the taxonomy outputs equal the sums, concurrent requests are really batched, bad
requests are refused without harm, and the model card is readable through the model-configuration API.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from tests.fixtures.needs import need_module

pytestmark = pytest.mark.system

grpcclient = need_module("tritonclient.grpc", "tritonclient[grpc], a dependency of skinbatch: reinstall it")
need_module("torch", "the converter's packages: pip install 'skinbatch[convert]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

from skinbatch.converter.export import sample_images, torch_probs  # noqa: E402
from skinbatch.modelcard import card_from_model_config, load_model_card  # noqa: E402
from skinbatch.taxonomy import aggregate, coarse_matrix, fine_matrix, malignancy_matrix  # noqa: E402
from tests.fixtures.triton import local_triton  # noqa: E402

ENSEMBLE = "skin_classifier"
OUTPUTS = ("TRAINING_PROBS", "COARSE_PROBS", "FINE_PROBS", "MALIGNANCY")


@pytest.fixture(scope="module")
def server(cpu_repository, tmp_path_factory) -> Iterator:
    with local_triton(cpu_repository, tmp_path_factory.mktemp("triton-converted")) as triton:
        yield triton


@pytest.fixture
def client(server) -> Iterator:
    client = grpcclient.InferenceServerClient(server.grpc_endpoint)
    yield client
    client.close()


def _infer(client, images: np.ndarray, dtype: str = "UINT8") -> dict[str, np.ndarray]:
    inp = grpcclient.InferInput("IMAGE", list(images.shape), dtype)
    inp.set_data_from_numpy(images)
    result = client.infer(ENSEMBLE, [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
    return {name: result.as_numpy(name) for name in OUTPUTS}


def _metrics(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()  # noqa: S310 - the server under test
    out: dict[str, float] = {}
    for name in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success"):
        match = re.search(rf'^{name}{{[^}}]*model="inception_v3"[^}}]*}} (\S+)$', text, re.MULTILINE)
        out[name] = float(match.group(1)) if match else 0.0
    return out


def _settled_metrics(server, quiet_s: float = 2.5, timeout_s: float = 20) -> dict[str, float]:
    """Counters once they stop moving: Triton refreshes its Prometheus metrics every ~2 s, not per request."""
    deadline = time.monotonic() + timeout_s
    last, since = _metrics(server), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _metrics(server)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def test_ensemble_is_ready(client) -> None:
    for model in (ENSEMBLE, "inception_v3", "taxonomy"):
        assert client.is_model_ready(model), model


def test_training_probs_equal_pytorch_and_sums_equal_taxonomy(client, converted) -> None:
    images = sample_images(3, seed=21)
    out = _infer(client, images)
    expected = torch_probs(converted.reference, images)
    assert out["TRAINING_PROBS"].dtype == np.float32 and out["TRAINING_PROBS"].shape == expected.shape
    np.testing.assert_allclose(out["TRAINING_PROBS"], expected, atol=1e-4, rtol=0)
    taxonomy = converted.taxonomy
    probs = out["TRAINING_PROBS"]
    np.testing.assert_allclose(out["COARSE_PROBS"], aggregate(probs, coarse_matrix(taxonomy)), atol=1e-5)
    np.testing.assert_allclose(out["FINE_PROBS"], aggregate(probs, fine_matrix(taxonomy)), atol=1e-5)
    np.testing.assert_allclose(out["MALIGNANCY"], aggregate(probs, malignancy_matrix(taxonomy)), atol=1e-5)
    assert out["COARSE_PROBS"].shape == (3, 3) and out["FINE_PROBS"].shape == (3, 9)
    assert out["MALIGNANCY"].shape == (3, 1)


def test_concurrent_single_requests_are_batched(client, server, converted) -> None:
    before = _settled_metrics(server)
    images = sample_images(64, seed=3)
    done = threading.Semaphore(0)
    results: list = [None] * len(images)
    errors: list = []

    def callback_for(i: int):
        # tritonclient passes result= and error= by keyword; other names fail silently in a gRPC thread.
        def callback(result, error) -> None:
            if error is not None:
                errors.append(error)
            else:
                results[i] = result.as_numpy("TRAINING_PROBS")
            done.release()

        return callback

    for i in range(len(images)):
        inp = grpcclient.InferInput("IMAGE", [1, 299, 299, 3], "UINT8")
        inp.set_data_from_numpy(images[i:i + 1])
        client.async_infer(ENSEMBLE, [inp], callback_for(i),
                           outputs=[grpcclient.InferRequestedOutput("TRAINING_PROBS")])
    for _ in range(len(images)):
        assert done.acquire(timeout=300), "a request never completed"
    assert not errors, [str(e) for e in errors[:3]]

    after = _settled_metrics(server)
    count = after["nv_inference_count"] - before["nv_inference_count"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert count == 64
    assert 0 < executions < count, f"{count} inferences in {executions} executions: no batching"
    print(f"average batch size of inception_v3 under 64 concurrent requests: {count / executions:.2f}")
    # Batched results are the same as one-by-one: the split back to requests keeps the order.
    np.testing.assert_allclose(np.concatenate(results[:4]), torch_probs(converted.reference, images[:4]), atol=1e-4)


@pytest.mark.parametrize(
    "shape,dtype",
    [((1, 224, 224, 3), "UINT8"), ((1, 299, 299), "UINT8"), ((1, 3, 299, 299), "UINT8"), ((1, 299, 299, 3), "FP32")],
)
def test_bad_requests_are_refused_and_server_stays_up(client, shape, dtype) -> None:
    np_dtype = np.uint8 if dtype == "UINT8" else np.float32
    with pytest.raises(InferenceServerException):
        _infer(client, np.zeros(shape, dtype=np_dtype), dtype)
    assert client.is_server_live() and client.is_model_ready(ENSEMBLE)
    assert _infer(client, sample_images(1))["TRAINING_PROBS"].shape == (1, 45)


@pytest.mark.parametrize("subset", [["TRAINING_PROBS"], ["MALIGNANCY"], ["COARSE_PROBS", "FINE_PROBS"]])
def test_any_subset_of_outputs_can_be_requested(client, subset) -> None:
    inp = grpcclient.InferInput("IMAGE", [1, 299, 299, 3], "UINT8")
    inp.set_data_from_numpy(sample_images(1))
    result = client.infer(ENSEMBLE, [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in subset])
    assert sorted(o.name for o in result.get_response().outputs) == sorted(subset)


def test_model_card_is_readable_through_triton(client, cpu_repository) -> None:
    config = client.get_model_config(ENSEMBLE, as_json=True)["config"]
    card = card_from_model_config(config)
    assert card == load_model_card(cpu_repository)
    assert card.target == "cpu" and card.trained is True
    assert len(card.training_classes) == 45
    assert [o.get("label_filename", "") for o in config["output"]] == [
        "training_labels.txt", "coarse_labels.txt", "fine_labels.txt", "malignancy_labels.txt", ""
    ], "the four score outputs are labelled; MALIGNANCY_MAP is a grid, with no labels"


def test_answers_name_the_model_version_of_the_card(client, cpu_repository) -> None:
    """Clients detect a rollout by the version in each answer; it must be the version the card names."""
    card = load_model_card(cpu_repository)
    inp = grpcclient.InferInput("IMAGE", [1, 299, 299, 3], "UINT8")
    inp.set_data_from_numpy(sample_images(1, seed=3))
    result = client.infer(ENSEMBLE, [inp], outputs=[grpcclient.InferRequestedOutput("MALIGNANCY")])
    assert result.get_response().model_version == card.version
