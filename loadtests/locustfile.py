"""Locust load test for the classifier: posts real images and validates every answer.

    make loadtest                                   # 16 users for 60 s against `make serve` (127.0.0.1:8080)
    locust -f loadtests/locustfile.py --headless -u 4 -r 4 -t 30s --host http://127.0.0.1:8080 \
        --image-dir build/loadtest_images --model-name classifier --response-format ours

A 200 with a malformed body counts as a failure: see loadtests/contract.py.
``--protocol v2`` posts the same images as KServe v2 infer requests (peers/v2.py: the Triton peer's protocol) and
checks the JSON answer inside the reply the same way, so every server of `make bench-peers` meets one client.
The images are read once, when the test starts, and shared by every user.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import grpc
from locust import FastHttpUser, User, events, task

from loadtests.contract import FORMATS, check
from peers import v2

IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
PAYLOADS: list[tuple[str, bytes, str]] = []  # (name, body, content type), filled once per test run
_next_payload = itertools.count()


@events.init_command_line_parser.add_listener
def add_arguments(parser) -> None:
    parser.add_argument(
        "--image-dir",
        default="build/loadtest_images",
        help="folder of PNG/JPEG images to post, searched recursively (default: build/loadtest_images)",
    )
    parser.add_argument("--model-name", default="classifier", help="TorchServe model name (default: classifier)")
    parser.add_argument(
        "--protocol",
        choices=("http", "grpc", "v2"),
        default="http",
        help="http: POST /predictions over --host; grpc: Predictions over --grpc-host/--grpc-port; "
        "v2: KServe v2 infer over --host, our JSON in its 'answer' output (default: http)",
    )
    parser.add_argument(
        "--path",
        default="",
        help="the HTTP route to post to (default: /predictions/MODEL, or /v2/models/MODEL/infer with --protocol v2)",
    )
    parser.add_argument("--grpc-host", default="127.0.0.1", help="gRPC inference host (default: 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, default=7070, help="gRPC inference port (default: 7070)")
    parser.add_argument(
        "--response-format",
        choices=FORMATS,
        default="ours",
        help="ours: top-2 + embedding stats; stock: TorchServe image_classifier's {label: prob} (default: ours)",
    )


def load_payloads(image_dir: str | Path) -> list[tuple[str, bytes, str]]:
    root = Path(image_dir)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"error: no .png/.jpg images under {root}; create some with `python -m loadtests.images {root}`")
    return [(str(p.relative_to(root)), p.read_bytes(), IMAGE_SUFFIXES[p.suffix.lower()]) for p in files]


@events.test_start.add_listener
def read_images(environment, **_kwargs) -> None:
    if not PAYLOADS:
        PAYLOADS.extend(load_payloads(environment.parsed_options.image_dir))


class ClassifierUser(FastHttpUser):
    """A closed-loop client: one image at a time, cycling through the folder (users interleave)."""

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.v2 = opts.protocol == "v2"
        default = v2.infer_path(opts.model_name) if self.v2 else f"/predictions/{opts.model_name}"
        self.path = opts.path or default
        self.response_format = opts.response_format
        if not PAYLOADS:  # a user spawned without test_start (e.g. a locust worker): read them now
            PAYLOADS.extend(load_payloads(opts.image_dir))

    @task
    def classify(self) -> None:
        name, body, content_type = PAYLOADS[next(_next_payload) % len(PAYLOADS)]
        headers = {"Content-Type": content_type}
        if self.v2:
            body, headers = v2.request(body)
        # One entry name for all images, so the stats table has one row per endpoint, not per file.
        with self.client.post(self.path, data=body, headers=headers, name=self.path, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code} for {name}: {(resp.text or '')[:200]}")
                return
            try:
                answer = v2.answer(resp.status_code, resp.content)[1] if self.v2 else json.loads(resp.text)
            except (TypeError, ValueError, KeyError):
                resp.failure(f"not JSON for {name}: {(resp.text or '')[:200]}")
                return
            reason = check(answer, self.response_format)
            if reason:
                resp.failure(f"{name}: {reason}")
            else:
                resp.success()


class GrpcClassifierUser(User):
    """The same closed loop over TorchServe's gRPC Predictions call (serving.grpc_client), validated the same way."""

    def on_start(self) -> None:
        from serving._generated import inference_pb2_grpc
        from serving.grpc_client import channel, predictions_request  # generated stubs: only needed for gRPC runs

        opts = self.environment.parsed_options
        self.model, self.response_format = opts.model_name, opts.response_format
        self.request = predictions_request
        self.channel = channel(opts.grpc_host, opts.grpc_port)
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)
        if not PAYLOADS:
            PAYLOADS.extend(load_payloads(opts.image_dir))

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def classify(self) -> None:
        from serving.grpc_client import PredictionError, from_rpc_error, parse_answer

        name, body, _ = PAYLOADS[next(_next_payload) % len(PAYLOADS)]
        start, length, exception = time.perf_counter(), 0, None
        try:
            reply = self.stub.Predictions(self.request(body, model=self.model), timeout=60)
            length = len(reply.prediction)
            reason = check(parse_answer(reply.prediction), self.response_format)
            if reason:
                exception = AssertionError(f"{name}: {reason}")
        except grpc.RpcError as error:
            exception = from_rpc_error(error)
        except PredictionError as error:
            exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"Predictions/{self.model}",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )


@events.init.add_listener
def choose_protocol(environment, **_kwargs) -> None:
    """Run only the user class of --protocol, so an HTTP run never mixes in gRPC calls (or the reverse)."""
    opts = environment.parsed_options
    if opts is None:
        return
    chosen = GrpcClassifierUser if opts.protocol == "grpc" else ClassifierUser
    environment.user_classes = [chosen]
