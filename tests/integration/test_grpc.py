"""TorchServe's gRPC inference API, through our client and our stubs, against the live test server.

The same session server as test_http.py; its gRPC port is a free one (server_overrides).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests

from serving._generated import inference_pb2_grpc
from serving.grpc_client import PredictionError, channel, ping, predict, predictions_request
from serving.launcher import model_workers
from tests.conftest import REPO
from tests.integration.test_http import check_contract

pytestmark = [pytest.mark.server, pytest.mark.slow]

NOT_AN_IMAGE = b"this is not an image"


@pytest.fixture(scope="module")
def grpc_port(server) -> int:
    return int(server.props["grpc_inference_port"])


def http_answer(server, data: bytes, seed: int) -> dict:
    resp = requests.post(f"{server.inference_url}/predictions/classifier", headers={"X-Seed": str(seed)}, data=data, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_ping(grpc_port):
    assert ping(port=grpc_port) == {"status": "Healthy"}


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_prediction_equals_http_answer_for_the_same_seed(server, grpc_port, images, ext):
    data = images[ext].read_bytes()
    answer = predict(data, seed=7, port=grpc_port)
    check_contract(answer)
    assert answer["crop"]["seed"] == 7
    assert answer == http_answer(server, data, seed=7)


def test_without_seed_the_server_draws_and_reports_one(server, grpc_port, images):
    data = images["png"].read_bytes()
    answer = predict(data, port=grpc_port)
    assert isinstance(answer["crop"]["seed"], int)
    assert predict(data, seed=answer["crop"]["seed"], port=grpc_port) == answer


def test_non_image_is_refused_with_the_handlers_message_and_server_keeps_serving(server, grpc_port, images):
    pids_before = {w["pid"] for w in model_workers(server.management_url, "classifier")}
    # On the wire: TorchServe 0.12 drops the handler's per-request 400 over gRPC (GRPCJob.response
    # ignores the status), so the call is OK and carries the handler's JSON error body.
    with channel(port=grpc_port) as chan:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(chan)
        response, call = stub.Predictions.with_call(predictions_request(NOT_AN_IMAGE), timeout=10)
    assert call.code() == grpc.StatusCode.OK
    body = json.loads(response.prediction)
    assert body["code"] == 400 and "not an image" in body["message"]
    # Through the client: the status TorchServe maps an HTTP 400 to (INVALID_ARGUMENT), within the deadline.
    started = time.monotonic()
    with pytest.raises(PredictionError) as caught:
        predict(NOT_AN_IMAGE, port=grpc_port, timeout=10)
    assert time.monotonic() - started < 10
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.http_status == 400
    assert "not an image" in caught.value.message
    check_contract(predict(images["png"].read_bytes(), port=grpc_port))
    workers = model_workers(server.management_url, "classifier")
    assert {w["pid"] for w in workers} == pids_before and all(w["status"] == "READY" for w in workers)


def test_unknown_model_is_a_real_grpc_error_status(grpc_port, images):
    """Errors raised by the frontend itself do travel as gRPC statuses; TorchServe says INTERNAL, not NOT_FOUND."""
    with channel(port=grpc_port) as chan:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(chan)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predictions(predictions_request(images["png"].read_bytes(), model="no_such_model"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "Model not found: no_such_model" in caught.value.details()


def same_answer(a: dict, b: dict) -> bool:
    """Equal up to float rounding: batches of different sizes change logits in their last bits (oneDNN picks
    other kernels), so only answers computed alone, as in the sequential tests above, are bit-identical."""
    numbers = [
        [p["probability"] for p in x["predictions"]] + [x["embedding"]["mean"], x["embedding"]["variance"]] for x in (a, b)
    ]
    labels = [[(p["label"], p["index"]) for p in x["predictions"]] for x in (a, b)]
    same_model = a["model"] == b["model"]
    return (
        same_model
        and a["crop"] == b["crop"]
        and labels[0] == labels[1]
        and numbers[0] == pytest.approx(numbers[1], rel=1e-5, abs=1e-7)
    )


def test_twenty_concurrent_calls_all_succeed(server, grpc_port, images):
    bodies = [images["png" if i % 2 else "jpg"].read_bytes() for i in range(20)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: predict(b, seed=5, port=grpc_port, timeout=120), bodies))
    for answer in answers:
        check_contract(answer)
    assert all(same_answer(a, answers[1]) for a in answers[1::2]) and all(same_answer(a, answers[0]) for a in answers[0::2])
    assert same_answer(answers[1], http_answer(server, bodies[1], seed=5))
    assert not same_answer(answers[0], answers[1])  # png and jpg are different images


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.grpc_client", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_prints_the_same_json_as_http(server, grpc_port, images):
    out = run_cli(str(images["jpg"]), "--seed", "9", "--port", str(grpc_port), "--model", "classifier", "--timeout", "30")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == http_answer(server, images["jpg"].read_bytes(), seed=9)


def test_cli_errors_are_one_line_and_an_exit_code(grpc_port, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(NOT_AN_IMAGE)
    refused = run_cli(str(bad), "--port", str(grpc_port))
    unknown = run_cli(str(images["png"]), "--port", str(grpc_port), "--model", "no_such_model")
    for out, expected in ((refused, "INVALID_ARGUMENT: body is not an image"), (unknown, "INTERNAL: Model not found")):
        assert out.returncode == 1 and out.stdout == ""
        assert expected in out.stderr and "Traceback" not in out.stderr
