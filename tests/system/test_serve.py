"""System tests of ``skinbatch serve``: the real Triton bundled in nvidia-pytriton, on the CPU.

The model repository is written by the tests themselves: a python-backend ``double`` model
(FP32 [-1, 4] -> x * 2) with dynamic batching, whose ``execute()`` handles all the requests of a batch
in one numpy call, so Triton's batch statistics show whether batches formed.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from skinbatch.contract import ExitCode
from skinbatch.serve import (
    LocalTriton,
    ModelLoadError,
    NumpyVersionError,
    PortInUseError,
    RepositoryError,
    check_environment,
)
from tests.fixtures.triton import local_triton, require_triton, triton_config

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]

DOUBLE_CONFIG = """\
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

DOUBLE_MODEL = '''\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        # One numpy call for the whole batch: the reason dynamic batching pays off.
        inputs = [pb_utils.get_input_tensor_by_name(r, "X").as_numpy() for r in requests]
        if any(x.size == 0 for x in inputs):
            raise pb_utils.TritonModelException("empty input tensor (numpy 2 under the stub?)")
        doubled = np.concatenate(inputs, axis=0) * np.float32(2)
        responses, start = [], 0
        for x in inputs:
            y = doubled[start : start + len(x)].astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y)]))
            start += len(x)
        return responses
'''

BROKEN_MODEL = '''\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("boom: weights file missing")

    def execute(self, requests):
        return []
'''


def write_model(repository: Path, name: str, config: str, model_py: str) -> Path:
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").write_text(model_py)
    return model_dir


def double_repository(root: Path) -> Path:
    repository = root / "repository"
    write_model(repository, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    return repository


def metric(text: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} ([0-9.e+]+)$', text, re.MULTILINE)
    assert match, f"{name} for {model} not in /metrics"
    return float(match.group(1))


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test server
        return response.read().decode()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    root = tmp_path_factory.mktemp("serve")
    with local_triton(double_repository(root), work_dir=root / "work") as running:
        yield running


# --- a healthy server ---------------------------------------------------------------------------


def test_server_is_ready(server: LocalTriton) -> None:
    assert server.is_running()
    with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=5) as response:  # noqa: S310
        assert response.status == 200
    assert "Started HTTPService" in server.logs()


def test_http_inference(server: LocalTriton) -> None:
    import tritonclient.http as httpclient

    x = np.array([[1, 2, 3, 4], [0.5, -1, 0, 8]], dtype=np.float32)
    with httpclient.InferenceServerClient(server.http_endpoint) as client:
        inp = httpclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        y = client.infer("double", [inp]).as_numpy("Y")
    assert y.shape == (2, 4)  # an empty output would mean the stub received empty inputs
    np.testing.assert_array_equal(y, x * 2)


def test_grpc_inference(server: LocalTriton) -> None:
    import tritonclient.grpc as grpcclient

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with grpcclient.InferenceServerClient(server.grpc_endpoint) as client:
        inp = grpcclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        y = client.infer("double", [inp]).as_numpy("Y")
    assert y.shape == (3, 4)
    np.testing.assert_array_equal(y, x * 2)


def test_metrics_endpoint(server: LocalTriton) -> None:
    text = fetch(server.metrics_url)
    assert 'nv_inference_count{model="double"' in text
    assert 'nv_inference_exec_count{model="double"' in text
    assert "nv_inference_request_summary_us" in text  # --metrics-config summary_latencies=true


def test_dynamic_batching_forms_batches(server: LocalTriton) -> None:
    import tritonclient.grpc as grpcclient

    before = fetch(server.metrics_url)
    count0 = metric(before, "nv_inference_count", "double")
    exec0 = metric(before, "nv_inference_exec_count", "double")

    results: queue.Queue[tuple[object, object]] = queue.Queue()

    # tritonclient calls back with keyword arguments `result` and `error`; other names fail silently.
    def callback(result: object, error: object) -> None:
        results.put((result, error))

    n = 16
    with grpcclient.InferenceServerClient(server.grpc_endpoint) as client:
        for i in range(n):
            inp = grpcclient.InferInput("X", [1, 4], "FP32")
            inp.set_data_from_numpy(np.full((1, 4), i, dtype=np.float32))
            client.async_infer("double", [inp], callback)
        answers = [results.get(timeout=30) for _ in range(n)]
    assert all(error is None for _, error in answers), [e for _, e in answers if e]
    got = sorted(float(result.as_numpy("Y")[0, 0]) for result, _ in answers)  # type: ignore[attr-defined]
    assert got == [2.0 * i for i in range(n)]

    deadline = time.monotonic() + 10
    while True:
        after = fetch(server.metrics_url)
        count = metric(after, "nv_inference_count", "double") - count0
        execs = metric(after, "nv_inference_exec_count", "double") - exec0
        if count >= n or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert count == n
    assert count / execs > 1, f"no batching: {count} inferences in {execs} executions"


def test_bad_requests_get_errors_and_server_survives(server: LocalTriton) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    with httpclient.InferenceServerClient(server.http_endpoint) as client:
        wrong_shape = httpclient.InferInput("X", [1, 3], "FP32")
        wrong_shape.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="shape"):
            client.infer("double", [wrong_shape])

        wrong_dtype = httpclient.InferInput("X", [1, 4], "INT32")
        wrong_dtype.set_data_from_numpy(np.ones((1, 4), dtype=np.int32))
        with pytest.raises(InferenceServerException, match="(?i)datatype|data type|FP32"):
            client.infer("double", [wrong_dtype])

        too_big = httpclient.InferInput("X", [9, 4], "FP32")  # max_batch_size is 8
        too_big.set_data_from_numpy(np.ones((9, 4), dtype=np.float32))
        with pytest.raises(InferenceServerException, match="batch"):
            client.infer("double", [too_big])

        assert client.is_server_ready()
        good = httpclient.InferInput("X", [1, 4], "FP32")
        good.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        np.testing.assert_array_equal(client.infer("double", [good]).as_numpy("Y"), np.full((1, 4), 2.0))
    assert server.is_running()


def test_restart_keeps_the_ports(server: LocalTriton) -> None:
    urls = (server.http_url, server.grpc_url, server.metrics_url)
    old_pid = server.pid
    startup_s = server.restart()
    assert server.pid != old_pid
    assert (server.http_url, server.grpc_url, server.metrics_url) == urls
    assert startup_s > 0 and server.is_running()
    assert "nv_inference_count" in fetch(server.metrics_url)


# --- failures that must come out as typed errors ------------------------------------------------


def test_port_in_use_is_refused_before_start(tmp_path: Path) -> None:
    require_triton()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LocalTriton(triton_config(double_repository(tmp_path), tmp_path / "work", http_port=port))
        with pytest.raises(PortInUseError) as caught:
            server.start()
    assert caught.value.port == port
    assert caught.value.service == "HTTP"
    assert server.pid is None  # refused before anything was launched


def test_port_taken_during_start_is_read_from_the_log(tmp_path: Path) -> None:
    require_triton()
    server = LocalTriton(triton_config(double_repository(tmp_path), tmp_path / "work"))
    server.start()
    # Triton binds its ports only after the models loaded (a second or more), so this wins the race.
    with socket.socket() as thief:
        try:
            thief.bind(("127.0.0.1", server.ports["metrics"]))
            thief.listen()
            with pytest.raises(PortInUseError) as caught:
                server.wait_ready(timeout=60)
        finally:
            server.stop()
    assert caught.value.port == server.ports["metrics"]
    assert caught.value.service == "metrics"
    assert "already in use" in caught.value.log_tail


def test_missing_repository(tmp_path: Path) -> None:
    server = LocalTriton(triton_config(tmp_path / "no-such-repository"))
    with pytest.raises(RepositoryError, match="does not exist"):
        server.start()


def test_empty_repository(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryError, match="empty"):
        LocalTriton(triton_config(tmp_path / "empty")).start()


def test_broken_model_is_named(tmp_path: Path) -> None:
    require_triton()
    repository = double_repository(tmp_path)
    write_model(repository, "broken", DOUBLE_CONFIG, BROKEN_MODEL)
    server = LocalTriton(triton_config(repository, tmp_path / "work"))
    server.start()
    try:
        with pytest.raises(ModelLoadError) as caught:
            server.wait_ready(timeout=60)
    finally:
        server.stop()
    assert caught.value.models == ["broken"]  # double loaded fine and is not blamed
    assert "boom: weights file missing" in caught.value.failures["broken"]
    assert "broken" in str(caught.value)


def test_broken_model_reported_by_repository_index(tmp_path: Path) -> None:
    """With exit_on_error=False the server stays up; the failure comes from /v2/repository/index."""
    require_triton()
    repository = double_repository(tmp_path)
    write_model(repository, "broken", DOUBLE_CONFIG, BROKEN_MODEL)
    server = LocalTriton(triton_config(repository, tmp_path / "work", exit_on_error=False))
    server.start()
    try:
        with pytest.raises(ModelLoadError) as caught:
            server.wait_ready(timeout=60)
        assert server.is_running()
    finally:
        server.stop()
    assert caught.value.models == ["broken"]
    assert "boom" in caught.value.failures["broken"]


def test_python_model_without_model_file_is_refused(tmp_path: Path) -> None:
    # Triton 2.51's python backend hangs on this instead of failing, so it is checked beforehand.
    repository = double_repository(tmp_path)
    (repository / "double" / "1" / "model.py").unlink()
    with pytest.raises(ModelLoadError) as caught:
        LocalTriton(triton_config(repository)).start()
    assert caught.value.models == ["double"]


def test_numpy_version_is_asked_of_the_stubs_interpreter() -> None:
    require_triton()
    from skinbatch.serve import environment

    dist, env = check_environment()
    assert environment.stub_numpy_version(env, dist.root) == np.__version__


def test_numpy_2_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stub runs an isolated interpreter (PYTHONPATH is ignored), so a numpy 2 could only come
    # from the environment's site-packages; stand in for that answer.
    require_triton()
    from skinbatch.serve import environment

    monkeypatch.setattr(environment, "stub_numpy_version", lambda env, cwd=None: "2.1.0")
    with pytest.raises(NumpyVersionError, match=r"numpy 2\.1\.0.*numpy<2"):
        check_environment()


def test_missing_stub_for_this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    require_triton()
    from skinbatch.serve import PythonStubNotFoundError, environment

    monkeypatch.setattr(environment, "python_version_tag", lambda: "3.99")
    with pytest.raises(PythonStubNotFoundError, match=r"Python 3\.99 .*3\.11"):
        environment.locate_distribution()


def test_missing_pytriton(monkeypatch: pytest.MonkeyPatch) -> None:
    from skinbatch.serve import TritonBinaryNotFoundError, environment

    monkeypatch.setattr(environment.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TritonBinaryNotFoundError, match=r"skinbatch\[serve\]"):
        environment.locate_distribution()


# --- the command ---------------------------------------------------------------------------------


def test_cli_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    require_triton()
    repository = double_repository(tmp_path)
    command = [sys.executable, "-m", "skinbatch.serve.cli", "--repository", str(repository),
               "--http-port", "0", "--grpc-port", "0", "--triton-metrics-port", "0", "--json",
               "--work-dir", str(tmp_path / "work")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        events: dict[str, dict] = {}
        while "ready" not in events:
            line = process.stdout.readline()
            assert line, f"serve exited early with {process.wait()}: {events}"
            event = json.loads(line)
            assert event["event"] != "error", event["message"]
            events[event["event"]] = event
        started = events["started"]
        assert fetch(f"{started['http_url']}/v2/health/ready") == ""

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
        rest = [json.loads(line) for line in process.stdout.read().splitlines() if line.strip()]
        assert rest and rest[-1]["event"] == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(started["pid"], 0)  # tritonserver is gone too
    assert all(port_is_free(port) for port in started["ports"].values())


def test_cli_reports_a_broken_model(tmp_path: Path) -> None:
    require_triton()
    repository = tmp_path / "repository"
    write_model(repository, "broken", DOUBLE_CONFIG, BROKEN_MODEL)
    result = subprocess.run(
        [sys.executable, "-m", "skinbatch.serve.cli", "--repository", str(repository),
         "--http-port", "0", "--grpc-port", "0", "--triton-metrics-port", "0", "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == ExitCode.START_FAILED
    assert "broken" in result.stderr and "boom" in result.stderr
