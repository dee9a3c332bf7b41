"""Classify an image over TorchServe's gRPC inference API; the answer is the same JSON as HTTP.

    python -m serving.grpc_client image.png [--seed N] [--host H --port P] [--model classifier] [--timeout S]

The same calls are importable: ``predict(image_bytes, seed=42)`` returns the parsed
JSON, ``ping()`` the server's health. Any failure raises ``PredictionError`` with a gRPC
status code and the server's message; the CLI prints that line instead of a traceback
and exits 1.

Why the client reads error bodies: TorchServe 0.12 drops a handler's per-request status
over gRPC (``GRPCJob.response`` ignores it), so an image the handler refuses with a 400
arrives as status OK carrying the handler's JSON error body. ``predict`` turns that body
into the status TorchServe itself uses for a 400 (``GRPCUtils.getGRPCStatusCode``:
INVALID_ARGUMENT), so callers see one kind of error whichever path it took.

The stubs in ``serving._generated`` come from ``serving/proto/inference.proto``
(``make stubs``, run by ``make install``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2

from classifier.limits import MAX_REQUEST_BYTES

try:
    from serving._generated import inference_pb2, inference_pb2_grpc
except ImportError as exc:  # a fresh clone before `make install`
    raise ImportError(f"gRPC stubs are missing ({exc}); generate them with `make stubs` (or `make install`)") from exc

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7070
DEFAULT_MODEL = "classifier"
DEFAULT_TIMEOUT = 60.0
# Send and receive up to the frontend's own cut-off (classifier.limits says why), not gRPC's default of 4 MiB.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_REQUEST_BYTES), ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)]


# TorchServe's own HTTP -> gRPC table (org.pytorch.serve.util.GRPCUtils), for error bodies.
HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    416: grpc.StatusCode.OUT_OF_RANGE,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class PredictionError(Exception):
    """A call that did not produce an answer: ``code`` is a gRPC status, ``message`` says why."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code, self.message, self.http_status = code, message, http_status


def grpc_status_for_http(status: int) -> grpc.StatusCode:
    if status in HTTP_TO_GRPC:
        return HTTP_TO_GRPC[status]
    if 400 <= status < 500:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL if 500 <= status < 600 else grpc.StatusCode.UNKNOWN


def parse_answer(body: bytes) -> dict[str, Any]:
    """The handler's JSON answer, or a PredictionError for its error body ``{"code": 4xx, "message": ...}``."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise PredictionError(grpc.StatusCode.INTERNAL, f"server answered something that is not JSON: {body[:80]!r}") from None
    if isinstance(answer, dict) and isinstance(answer.get("code"), int) and answer["code"] >= 400 and "message" in answer:
        raise PredictionError(grpc_status_for_http(answer["code"]), str(answer["message"]), answer["code"])
    return answer


def from_rpc_error(error: grpc.RpcError) -> PredictionError:
    """A non-OK gRPC status as a PredictionError; TorchServe appends a Java class name line, which is dropped."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    return PredictionError(code, (details or "").splitlines()[0] if details else "(no message)")


def channel(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> grpc.Channel:
    return grpc.insecure_channel(f"{host}:{port}", options=CHANNEL_OPTIONS)


def predictions_request(image: bytes, seed: int | None = None, model: str = DEFAULT_MODEL) -> inference_pb2.PredictionsRequest:
    """The request the handler reads: the image under ``data``, the seed as a decimal string under ``seed``."""
    inputs = {"data": image}
    if seed is not None:
        inputs["seed"] = str(seed).encode()
    return inference_pb2.PredictionsRequest(model_name=model, input=inputs)


def predict(
    image: bytes,
    seed: int | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    model: str = DEFAULT_MODEL,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Classify one encoded image; the parsed JSON answer.

    Raises:
        PredictionError: INVALID_ARGUMENT with the handler's message for bytes that are not
            an image, INTERNAL for an unknown model (TorchServe's choice), UNAVAILABLE when
            nothing listens, DEADLINE_EXCEEDED after ``timeout`` seconds.
    """
    with channel(host, port) as chan:
        stub = inference_pb2_grpc.InferenceAPIsServiceStub(chan)
        try:
            response = stub.Predictions(predictions_request(image, seed, model), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
    return parse_answer(response.prediction)


def ping(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 10.0) -> dict[str, Any]:
    """The server's health document, e.g. ``{"status": "Healthy"}``."""
    with channel(host, port) as chan:
        try:
            response = inference_pb2_grpc.InferenceAPIsServiceStub(chan).Ping(empty_pb2.Empty(), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
    return json.loads(response.health)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify an image over TorchServe's gRPC inference API.")
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, WebP, ...)")
    parser.add_argument("--seed", type=int, default=None, help="crop seed for a reproducible answer (default: server draws one)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server host (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"gRPC inference port (default: {DEFAULT_PORT})")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default: {DEFAULT_MODEL})")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"deadline in seconds (default: {DEFAULT_TIMEOUT:g})"
    )
    args = parser.parse_args(argv)
    try:
        image = args.image.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {args.image}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        answer = predict(image, args.seed, args.host, args.port, args.model, args.timeout)
    except PredictionError as exc:
        print(f"error: {args.host}:{args.port} {args.model}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
