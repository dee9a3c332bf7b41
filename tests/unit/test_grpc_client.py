"""The gRPC client's pure parts: the request it builds, and how it reads answers and error bodies."""

from __future__ import annotations

import json

import grpc
import pytest

from classifier.postprocessing import error_body
from classifier.service import parse_seed
from handlers.requests import extract_image, find_seed
from serving.grpc_client import PredictionError, grpc_status_for_http, parse_answer, predictions_request
from tests.conftest import REPO


def test_request_carries_image_and_seed_where_the_handler_reads_them():
    request = predictions_request(b"\x89PNG...", seed=42, model="classifier")
    # Round-trip through the wire format, then read it with the handler's own functions.
    inputs = dict(type(request).FromString(request.SerializeToString()).input)
    assert request.model_name == "classifier" and request.model_version == ""
    assert extract_image(inputs) == b"\x89PNG..."
    assert parse_seed(find_seed(inputs, headers=None)) == 42


def test_request_without_seed_has_no_seed_input():
    inputs = dict(predictions_request(b"img").input)
    assert set(inputs) == {"data"} and parse_seed(find_seed(inputs, headers=None)) is None


def test_answer_is_parsed_json():
    answer = {"predictions": [], "embedding": {"mean": 0.0, "variance": 0.0, "dim": 2048}, "crop": {"mode": "center"}}
    assert parse_answer(json.dumps(answer).encode()) == answer


@pytest.mark.parametrize(
    "http, code",
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (415, grpc.StatusCode.FAILED_PRECONDITION),
        (503, grpc.StatusCode.UNAVAILABLE),
        (500, grpc.StatusCode.INTERNAL),
    ],
)
def test_handler_error_body_becomes_a_status(http, code):
    with pytest.raises(PredictionError) as caught:
        parse_answer(error_body("body is not an image", http))
    assert caught.value.code == code and caught.value.http_status == http
    assert caught.value.message == "body is not an image" and str(caught.value) == f"{code.name}: body is not an image"


def test_non_json_answer_is_an_internal_error():
    with pytest.raises(PredictionError, match="INTERNAL: server answered something that is not JSON"):
        parse_answer(b"<html>")


def test_status_table_falls_back_by_class():
    assert grpc_status_for_http(418) == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_status_for_http(507) == grpc.StatusCode.INTERNAL
    assert grpc_status_for_http(302) == grpc.StatusCode.UNKNOWN


def test_client_message_cap_equals_the_servers_request_cap():
    from classifier.limits import MAX_REQUEST_BYTES as MAX_MESSAGE_BYTES
    from serving.grpc_client import CHANNEL_OPTIONS
    from serving.launcher import read_properties

    assert dict(CHANNEL_OPTIONS) == {
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    }
    for config in (REPO / "config.properties", REPO / "docker" / "config.properties"):
        assert int(read_properties(config)["max_request_size"]) == MAX_MESSAGE_BYTES, config
