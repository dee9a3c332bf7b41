"""TorchServe handler: image bytes -> top-2 classes and embedding statistics.

A thin adapter. TorchServe requires this module to define exactly one class; what a request carries is read by
``handlers.requests``, and the image's trip (prepare one request, answer a batch in order) is the core's
``classifier.service.ClassifierService``. What is left here is TorchServe's: its context, the status codes, the
KServe envelope, and the telemetry.

Each request in a batch is prepared on its own: a bad item gets its own 4xx status and JSON error
(``context.set_response_status(code, msg, idx)``) while the rest of the batch is served.

Under KServe's v1 protocol TorchServe wraps this handler in its ``kserve`` request envelope
(``TS_SERVICE_ENVELOPE=kserve``): the items are then the ``instances`` of one request, and the
envelope wraps the returned objects as ``{"predictions": [...]}`` (deploy/kserve/, docs/scaling.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

from classifier import jpeg_region
from classifier.backends import cpu_reason, select_device
from classifier.service import Answer, ClassifierService, Item, ItemError, Outputs, Prepared
from handlers.batch import Batch
from handlers.requests import extract_image, find_seed
from handlers.telemetry import ModelTelemetry

logger = logging.getLogger(__name__)
# TorchServe's envelopes that hand the handler a request's instances and serialise its return values
# themselves; KServe sets the variable (with enable_envvars_config=true in config.properties).
ENVELOPES = ("kserve", "kfserving")


class ClassifierHandler(BaseHandler):
    def initialize(self, context) -> None:
        props = context.system_properties
        self.enveloped = os.environ.get("TS_SERVICE_ENVELOPE", "") in ENVELOPES
        cuda_available = torch.cuda.is_available()
        self.device = device = select_device(props.get("gpu_id"), cuda_available)
        if device.type == "cpu":
            logger.info("running on the CPU: %s", cpu_reason(props.get("gpu_id"), cuda_available))
        # Threads are sized from the container's CPU limit (classifier.settings.usable_cpus), not the node's cores.
        self.service = ClassifierService.load(Path(props["model_dir"]), context.model_yaml_config, device=device)
        settings = self.service.settings
        self.pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="preprocess")
        self.telemetry = ModelTelemetry(context.model_name, self.service.labels, self.service.metadata.get("drift_reference"))
        self.telemetry.worker_started(context.metrics)
        region = "off" if not settings.region_decode else "on" if jpeg_region.unavailable_reason() is None else "unavailable"
        logger.info(
            "classifier ready: backend=%s device=%s threads=%d torch_threads=%d crop_mode=%s jpeg_region_decode=%s",
            self.service.backend.name,
            device,
            settings.threads,
            torch.get_num_threads(),
            settings.crop_mode,
            region,
        )
        self.initialized = True

    def preprocess(self, data: list[Mapping[str, Any]]) -> Batch:
        if not isinstance(data, list) or not data:  # the kserve envelope found no "instances" list
            raise PredictionException('the request has no instances: send {"instances": [{"data": "<base64 image>"}]}', 400)
        started = time.perf_counter()
        # Under an envelope, several items (instances) may come from one request: they share its headers and id.
        requests = len(self.context.request_processor or []) or 1
        headers = [self.context.get_all_request_header(min(idx, requests - 1)) for idx in range(len(data))]
        ids = [self.context.get_request_id(min(idx, requests - 1)) for idx in range(len(data))]
        with self.telemetry.timed(self.context.metrics, "preprocess"):
            if len(data) == 1:
                items = [self._prepare(data[0], headers[0], ids[0])]
            else:
                # Pillow's decoders and torch's ops release the GIL, so a batch decodes on all the worker's
                # cores instead of one while the others wait for inference (docs/optimization.md).
                items = list(self.pool.map(self._prepare, data, headers, ids))
        self.telemetry.decoded(self.context.metrics, [item.decode_seconds for item in items if isinstance(item, Prepared)])
        return Batch(items, started)

    def _prepare(self, request: Mapping[str, Any], headers: Mapping[str, Any], request_id: str | None = None) -> Item:
        try:
            image = extract_image(request, self.service.settings.max_body_bytes)
            seed = find_seed(request, headers)
        except ItemError as exc:
            return exc
        return self.service.prepare(image, seed, request_id)

    def inference(self, batch: Batch, *args, **kwargs) -> Batch:
        with self.telemetry.timed(self.context.metrics, "inference"):
            return Batch(batch.items, batch.started, self.service.predict(batch.items))

    def postprocess(self, batch: Batch) -> list[bytes] | list[dict]:
        with self.telemetry.timed(self.context.metrics, "postprocess"):
            answers = self.service.encode(batch.items, batch.outputs or Outputs(None, None))
            served = [answer.body for answer in answers if answer.ok]
            self.telemetry.answers(self.context.metrics, [b["predictions"] for b in served], [b["embedding"] for b in served])
            for answer in answers:
                if answer.error is not None:
                    self.telemetry.error(self.context.metrics, answer.code, answer.error.cause)
            responses = self._enveloped(answers) if self.enveloped else self._responses(answers)
        self.telemetry.batch(self.context.metrics, len(responses), time.perf_counter() - batch.started)
        return responses

    def _responses(self, answers: Sequence[Answer]) -> list[bytes]:
        """One JSON body per request, each failed one with its own status."""
        for idx, answer in enumerate(answers):
            self.context.set_response_content_type(idx, "application/json")
            if answer.error is not None:
                self.context.set_response_status(answer.code, str(answer.error), idx)
        return [answer.json() for answer in answers]

    def _enveloped(self, answers: Sequence[Answer]) -> list[dict]:
        """One object per instance, for the envelope to serialise: a failed instance is its error object.

        A request has one status, so it is the first error's when every instance failed, else 200.
        """
        errors = [answer for answer in answers if answer.error is not None]
        if errors and len(errors) == len(answers):
            self.context.set_response_status(errors[0].code, str(errors[0].error), 0)
        return [answer.body for answer in answers]
