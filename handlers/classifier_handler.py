"""TorchServe handler: image bytes -> top-2 classes and embedding statistics.

TorchServe requires this module to define exactly one class: reading a request lives in
``handlers.requests``, and everything else in the server-free core package ``classifier``.

Each request in a batch is decoded and validated on its own: a bad item gets
its own 4xx status and JSON error (``context.set_response_status(code, msg, idx)``)
while the rest of the batch is served.

Under KServe's v1 protocol TorchServe wraps this handler in its ``kserve`` request envelope
(``TS_SERVICE_ENVELOPE=kserve``): the items are then the ``instances`` of one request, and the
envelope wraps the returned objects as ``{"predictions": [...]}`` (deploy/kserve/, docs/scaling.md).
The heavy lifting lives in the core's pure modules:
``classifier.preprocessing``, ``classifier.postprocessing`` and ``classifier.backends``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

from classifier import jpeg_region
from classifier.backends import cpu_reason, load_backend, select_device, torch_threads
from classifier.decoding import ImageDecodeError
from classifier.pipeline import crop_info, parse_seed, read_labels, read_preprocess_config, resolve_seed, response_body
from classifier.postprocessing import embedding_stats, error_body, error_dict, top_k_predictions
from classifier.preprocessing import preprocess_bytes
from classifier.settings import HandlerSettings, usable_cpus
from handlers.requests import RequestError, extract_image, find_seed
from handlers.telemetry import ModelTelemetry

logger = logging.getLogger(__name__)
# TorchServe's envelopes that hand the handler a request's instances and serialise its return values
# themselves; KServe sets the variable (with enable_envvars_config=true in config.properties).
ENVELOPES = ("kserve", "kfserving")


class ClassifierHandler(BaseHandler):
    def initialize(self, context) -> None:
        props = context.system_properties
        model_dir = Path(props["model_dir"])
        # The container's CPU limit, not the node's core count: threads never oversubscribe a pod.
        self.settings = HandlerSettings.from_model_config(context.model_yaml_config, usable_cpus())
        self.enveloped = os.environ.get("TS_SERVICE_ENVELOPE", "") in ENVELOPES
        torch.set_num_threads(self.settings.threads)
        cuda_available = torch.cuda.is_available()
        self.device = select_device(props.get("gpu_id"), cuda_available)
        if self.device.type == "cpu":
            logger.info("running on the CPU: %s", cpu_reason(props.get("gpu_id"), cuda_available))
        self.preprocess_config = read_preprocess_config(model_dir, self.settings.max_image_pixels)
        self.labels = read_labels(model_dir)
        self.pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="preprocess")
        self.backend = load_backend(self.settings.backend, model_dir, self.device, self.settings.threads)
        torch.set_num_threads(torch_threads(self.backend.name, self.settings.threads))
        metadata = json.loads((model_dir / "metadata.json").read_text())
        self.telemetry = ModelTelemetry(context.model_name, self.labels, metadata.get("drift_reference"))
        self.telemetry.worker_started(context.metrics)
        # One warm-up pass so the first client does not pay for lazy initialisation.
        size = self.preprocess_config.input_size
        self.backend(torch.zeros(1, 3, size, size))
        region = "off" if not self.settings.region_decode else "on" if jpeg_region.unavailable_reason() is None else "unavailable"
        logger.info(
            "classifier ready: backend=%s device=%s threads=%d torch_threads=%d crop_mode=%s jpeg_region_decode=%s",
            self.backend.name,
            self.device,
            self.settings.threads,
            torch.get_num_threads(),
            self.settings.crop_mode,
            region,
        )
        self.initialized = True

    def preprocess(self, data: list[Mapping[str, Any]]) -> list[tuple[torch.Tensor, dict] | RequestError]:
        if not isinstance(data, list) or not data:  # the kserve envelope found no "instances" list
            raise PredictionException('the request has no instances: send {"instances": [{"data": "<base64 image>"}]}', 400)
        # Under an envelope, several items (instances) may come from one request: they share its headers and id.
        requests = len(self.context.request_processor or []) or 1
        headers = [self.context.get_all_request_header(min(idx, requests - 1)) for idx in range(len(data))]
        ids = [self.context.get_request_id(min(idx, requests - 1)) for idx in range(len(data))]
        self.batch_started, self.decode_seconds = time.perf_counter(), []
        with self.telemetry.timed(self.context.metrics, "preprocess"):
            if len(data) == 1:
                items = [self._prepare(data[0], headers[0], ids[0])]
            else:
                # Pillow's decoders and torch's ops release the GIL, so a batch decodes on all the worker's
                # cores instead of one while the others wait for inference (docs/optimization.md).
                items = list(self.pool.map(self._prepare, data, headers, ids))
        self.telemetry.decoded(self.context.metrics, self.decode_seconds)
        return items

    def _prepare(
        self, request: Mapping[str, Any], headers: Mapping[str, Any], request_id: str | None = None
    ) -> tuple[torch.Tensor, dict] | RequestError:
        try:
            image = extract_image(request, self.settings.max_body_bytes)
            mode = self.settings.crop_mode
            seed = resolve_seed(mode, parse_seed(find_seed(request, headers)))
            timings: dict[str, float] = {}
            tensor, box = preprocess_bytes(image, self.preprocess_config, mode, seed, self.settings.region_decode, timings)
            self.decode_seconds.append(timings["decode"])  # list.append is atomic: safe from the pool's threads
        except RequestError as exc:
            return exc
        except ImageDecodeError as exc:
            return RequestError(str(exc), cause="undecodable_image")
        except Exception:  # a bug of ours, not the client's: a 500 for this item alone, not its whole batch
            logger.exception("preprocessing failed for request %s", request_id)
            return RequestError(
                f"internal error while processing the image (request id {request_id}); the server log has the details",
                500,
                "internal_error",
            )
        return tensor, crop_info(mode, seed, box)

    def inference(self, items: list, *args, **kwargs) -> tuple[list, torch.Tensor | None, torch.Tensor | None]:
        tensors = [item[0] for item in items if not isinstance(item, RequestError)]
        if not tensors:
            return items, None, None
        with self.telemetry.timed(self.context.metrics, "inference"):
            logits, embedding = self.backend(torch.stack(tensors))
        return items, logits, embedding

    def postprocess(self, outputs) -> list[bytes] | list[dict]:
        with self.telemetry.timed(self.context.metrics, "postprocess"):
            responses = self._respond(*outputs)
        self.telemetry.batch(self.context.metrics, len(responses), time.perf_counter() - self.batch_started)
        return responses

    def _respond(self, items: list, logits: torch.Tensor | None, embedding: torch.Tensor | None) -> list[bytes] | list[dict]:
        predictions = top_k_predictions(logits, self.labels, self.settings.topk) if logits is not None else []
        stats = embedding_stats(embedding) if embedding is not None else []
        self.telemetry.answers(self.context.metrics, predictions, stats)
        if self.enveloped:
            return self._enveloped_results(items, predictions, stats)
        responses, row = [], 0
        for idx, item in enumerate(items):
            self.context.set_response_content_type(idx, "application/json")
            if isinstance(item, RequestError):
                self.context.set_response_status(item.code, str(item), idx)
                self.telemetry.error(self.context.metrics, item.code, item.cause)
                responses.append(error_body(str(item), item.code))
                continue
            responses.append(json.dumps(response_body(predictions[row], stats[row], item[1])).encode())
            row += 1
        return responses

    def _enveloped_results(self, items: list, predictions: list, stats: list) -> list[dict]:
        """One object per instance, for the envelope to serialise: a failed instance is its error object.

        A request has one status, so it is the first error's when every instance failed, else 200.
        """
        results, row = [], 0
        for item in items:
            if isinstance(item, RequestError):
                self.telemetry.error(self.context.metrics, item.code, item.cause)
                results.append(error_dict(str(item), item.code))
                continue
            results.append(response_body(predictions[row], stats[row], item[1]))
            row += 1
        errors = [item for item in items if isinstance(item, RequestError)]
        if errors and len(errors) == len(items):
            self.context.set_response_status(errors[0].code, str(errors[0]), 0)
        return results
