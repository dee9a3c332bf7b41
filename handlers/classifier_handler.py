"""TorchServe handler: image bytes -> top-2 classes and embedding statistics.

TorchServe requires this module to define exactly one class: reading a request lives in
``handlers.requests``, and everything else in the server-free core package ``classifier``.

Each request in a batch is decoded and validated on its own: a bad item gets
its own 4xx status and JSON error (``context.set_response_status(code, msg, idx)``)
while the rest of the batch is served. The heavy lifting lives in the core's pure modules:
``classifier.preprocessing``, ``classifier.postprocessing`` and ``classifier.backends``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from classifier.backends import load_backend, select_device
from classifier.postprocessing import embedding_stats, error_body, top_k_predictions
from classifier.preprocessing import CropBox, ImageDecodeError, PreprocessConfig, preprocess_bytes
from classifier.settings import HandlerSettings
from handlers.requests import RequestError, extract_image, find_seed, parse_seed
from handlers.telemetry import ModelTelemetry

logger = logging.getLogger(__name__)


class ClassifierHandler(BaseHandler):
    def initialize(self, context) -> None:
        props = context.system_properties
        model_dir = Path(props["model_dir"])
        self.settings = HandlerSettings.from_model_config(context.model_yaml_config, os.cpu_count() or 1)
        torch.set_num_threads(self.settings.threads)
        self.device = select_device(props.get("gpu_id"), torch.cuda.is_available())
        metadata = json.loads((model_dir / "metadata.json").read_text())
        self.preprocess_config = PreprocessConfig.from_dict(
            {**metadata["preprocessing"], "max_image_pixels": self.settings.max_image_pixels}
        )
        names = json.loads((model_dir / "index_to_name.json").read_text())
        self.labels = {int(k): v for k, v in names.items()}
        self.pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="preprocess")
        self.backend = load_backend(self.settings.backend, model_dir, self.device, self.settings.threads)
        self.telemetry = ModelTelemetry(context.model_name, self.labels, metadata.get("drift_reference"))
        self.telemetry.worker_started(context.metrics)
        # One warm-up pass so the first client does not pay for lazy initialisation.
        size = self.preprocess_config.input_size
        self.backend(torch.zeros(1, 3, size, size))
        logger.info(
            "classifier ready: backend=%s device=%s threads=%d crop_mode=%s",
            self.backend.name,
            self.device,
            self.settings.threads,
            self.settings.crop_mode,
        )
        self.initialized = True

    def preprocess(self, data: list[Mapping[str, Any]]) -> list[tuple[torch.Tensor, dict] | RequestError]:
        headers = [self.context.get_all_request_header(idx) for idx in range(len(data))]
        ids = [self.context.get_request_id(idx) for idx in range(len(data))]
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
            seed = parse_seed(find_seed(request, headers))
            mode = self.settings.crop_mode
            if mode == "center":
                seed = None  # the centre crop has no randomness to seed
            elif seed is None:
                seed = random.getrandbits(63)  # reported back, so any answer can be reproduced
            timings: dict[str, float] = {}
            tensor, box = preprocess_bytes(image, self.preprocess_config, mode, seed, timings)
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

    def postprocess(self, outputs) -> list[bytes]:
        with self.telemetry.timed(self.context.metrics, "postprocess"):
            responses = self._respond(*outputs)
        self.telemetry.batch(self.context.metrics, len(responses), time.perf_counter() - self.batch_started)
        return responses

    def _respond(self, items: list, logits: torch.Tensor | None, embedding: torch.Tensor | None) -> list[bytes]:
        predictions = top_k_predictions(logits, self.labels, self.settings.topk) if logits is not None else []
        stats = embedding_stats(embedding) if embedding is not None else []
        self.telemetry.answers(self.context.metrics, predictions, stats)
        responses, row = [], 0
        for idx, item in enumerate(items):
            self.context.set_response_content_type(idx, "application/json")
            if isinstance(item, RequestError):
                self.context.set_response_status(item.code, str(item), idx)
                self.telemetry.error(self.context.metrics, item.code, item.cause)
                responses.append(error_body(str(item), item.code))
                continue
            body = {"predictions": predictions[row], "embedding": stats[row], "crop": item[1]}
            responses.append(json.dumps(body).encode())
            row += 1
        return responses


def crop_info(mode: str, seed: int | None, box: CropBox) -> dict:
    return {"mode": mode, "seed": seed, "box": box.as_list()}
