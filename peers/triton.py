"""The classifier behind NVIDIA Triton, through PyTriton: a benchmark and a migration proof, not a second product.

    .venv-triton/bin/python -m peers.triton --mar model_store/classifier.mar --http-port 8010 --grpc-port 8011 --metrics-port 8012

Triton's C++ frontend takes the request (KServe v2 protocol, HTTP or gRPC) and PyTriton's python backend hands it to
``infer`` below, which calls the core (``classifier.service.ClassifierService``) exactly as the TorchServe handler does.
The request is ``POST /v2/models/classifier/infer`` with one BYTES input ``image`` (the file, best sent with the
binary-data extension) and the seed in an ``X-Seed`` header, forwarded by Triton as a request parameter. The answer is
one BYTES output ``answer``: our JSON, byte for byte.

It serves what our TorchServe serves when given the same ``--mar``: the archive is unpacked and read as
``cli.predict.open_model`` reads it (the archived model files, the archive's model-config, the manifest's name and
version), so backend, threads, crop mode and the version the answers report are the server's own.

One request per ``execute`` (``--max-batch 1``, the default): PyTriton can only fail a whole call (its
proxy/inference.py sends one error for every request it was handed), so with a dynamic batch a refused image would
either get a 200 or take its neighbours down with it. docs/peers.md has the measurements with and without batching.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from classifier.service import ClassifierService, ItemError, Prepared
from cli.predict import open_model

MODEL_NAME = "classifier"
# Triton forwards the HTTP and gRPC headers that match this as request parameters: the seed, as our server reads it.
# The match ignores case, but the parameter keeps the name as the client spelt it ("X-Seed" from requests, "x-seed"
# from gRPC metadata), so the lookup must ignore case too: an exact lookup drew a random seed for every request.
SEED_HEADER = "x-seed"


def seed_parameter(parameters: dict[str, Any]) -> Any:
    """The forwarded seed header among a request's parameters, whatever its case; None when there is none."""
    return next((value for key, value in parameters.items() if key.lower() == SEED_HEADER), None)


class Classifier:
    """PyTriton's inference callable: a list of requests in, one ``{"answer": ...}`` per request out, in order."""

    def __init__(self, service: ClassifierService):
        self.service = service

    def __call__(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        items = []
        for request in requests:
            images = request["image"]
            if images.size != 1:
                # A v2 request may carry several images; the answer contract is one image, one answer.
                raise ItemError(f"send one image per request, got {images.size} in input 'image'")
            seed = seed_parameter(request.parameters or {})
            items.append(self.service.prepare(bytes(images.reshape(-1)[0]), seed))
        refused = [item for item in items if not isinstance(item, Prepared)]
        if refused:
            # PyTriton fails the whole call or none of it; with one request per call that is this request alone.
            # Triton answers 500 with the message inside (docs/peers.md: PyTriton gives no way to a 4xx).
            raise refused[0]
        return [{"answer": np.array([[answer.json()]], dtype=np.object_)} for answer in self.service.answer(items)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--mar", type=Path, help="the archive our TorchServe serves (its model-config and version too)")
    model.add_argument("--model-dir", type=Path, help="a folder as `make train` writes it")
    parser.add_argument("--model-config", type=Path, help="override the model-config (default: the archive's, else the repo's)")
    parser.add_argument("--backend", help="override model-config's handler.backend (default: openvino-int8)")
    parser.add_argument("--threads", type=int, help="the backend's threads (default: cores / workers, as ours)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch", type=int, default=1, help="Triton's dynamic batch (the module docstring says why 1)")
    parser.add_argument("--delay-us", type=int, default=2000, help="the dynamic batcher's max queue delay")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    with open_model(args.model_dir, args.mar, args.model_config) as model:
        if model.drift:
            # The peer runs this checkout's core, TorchServe the archived copy: answers may differ.
            logging.warning("the archive's classifier/%s differ from this checkout's", ", ".join(model.drift))
        service = ClassifierService.load(
            model.folder, model.config, backend=args.backend, threads=args.threads, identity=model.identity
        )
        serve(service, args)  # inside: the unpacked archive lives as long as the server


def serve(service: ClassifierService, args: argparse.Namespace) -> None:
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        http_header_forward_pattern=SEED_HEADER,
        grpc_header_forward_pattern=SEED_HEADER,
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.delay_us)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=Classifier(service),
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="answer", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(batching=True, max_batch_size=args.max_batch, batcher=batcher),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
