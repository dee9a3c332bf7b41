"""One image's trip through the model, in one place: load once, prepare one request, answer a batch.

    service = ClassifierService.load(model_dir, model_config)
    item = service.prepare(body, seed)                 # bytes and a raw seed -> Prepared, or the ItemError to answer
    answers = service.answer([item, ...])              # one Answer per item, in order: 200 and the JSON, or the error

``answer`` is ``encode(items, predict(items))``: a server that times inference and postprocessing apart (the
TorchServe handler's metrics) calls the two halves itself. Values pass from step to step as return values, never as
state on the service, so one service can prepare requests on many threads at once.

The TorchServe handler, the command-line predictor, the C++ parity harness and the peer servers' adapters all call
this, so a seed, a crop record, an answer and a refusal mean the same thing wherever the model runs. What is left to
each of them is its transport: how a request arrives, and how a status code and a body leave.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classifier.backends import Backend, load_backend, torch_threads
from classifier.decoding import ImageDecodeError
from classifier.limits import MAX_SEED, SEED_BITS
from classifier.postprocessing import embedding_stats, error_dict, top_k_predictions
from classifier.preprocessing import preprocess_bytes
from classifier.settings import HandlerSettings, usable_cpus
from classifier.transforms import CropBox, CropMode, PreprocessConfig
from classifier.versions import ModelIdentity, model_identity

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- a failed item
class ItemError(ValueError):
    """A problem with one image, reported with ``code`` (the HTTP status the server gives it).

    ``cause`` is a short fixed name for the metrics (``classifier_request_errors_total``): a bounded label,
    unlike the message, which may quote the request.
    """

    def __init__(self, message: str, code: int = 400, cause: str = "invalid_input"):
        super().__init__(message)
        self.code, self.cause = code, cause


def check_body_size(size: int, max_bytes: int | None) -> None:
    """Refuse an image body over ``max_bytes`` (413) before decoding a byte of it."""
    if max_bytes is not None and size > max_bytes:
        raise ItemError(f"image body is {size} bytes, over the limit of {max_bytes} bytes", 413, "body_too_large")


def parse_seed(value: Any) -> int | None:
    """An optional seed (a form field, header or gRPC input, or a command-line flag) as an int."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    try:
        seed = int(text.strip())
    except ValueError:
        raise ItemError(f"seed must be an integer in [0, {MAX_SEED}], got {text[:40]!r}", cause="invalid_seed") from None
    if not 0 <= seed <= MAX_SEED:
        raise ItemError(f"seed must be an integer in [0, {MAX_SEED}], got {seed}", cause="invalid_seed")
    return seed


def resolve_seed(mode: CropMode, seed: int | None, draw: Callable[[int], int] = random.getrandbits) -> int | None:
    """The seed an image is cropped with, as the answer reports it.

    A centre crop has no randomness, so its seed is None whatever was asked. A random crop without
    a seed draws one (``draw(SEED_BITS)``), so any answer can be reproduced by sending its reported seed.
    """
    if mode == "center":
        return None
    return draw(SEED_BITS) if seed is None else seed


# ---------------------------------------------------------------- the model's files
def read_metadata(model_dir: Path) -> dict[str, Any]:
    """metadata.json, what training wrote about the model (preprocessing, drift reference, ...)."""
    return json.loads((model_dir / "metadata.json").read_text())


def read_preprocess_config(model_dir: Path, max_image_pixels: int) -> PreprocessConfig:
    """The preprocessing the model was trained with (its metadata.json), under the served pixel limit."""
    return PreprocessConfig.from_dict({**read_metadata(model_dir)["preprocessing"], "max_image_pixels": max_image_pixels})


def read_labels(model_dir: Path) -> dict[int, str]:
    """Class index -> name, from the model's index_to_name.json."""
    names = json.loads((model_dir / "index_to_name.json").read_text())
    return {int(k): v for k, v in names.items()}


# ---------------------------------------------------------------- the answer
def crop_info(mode: CropMode, seed: int | None, box: CropBox) -> dict[str, Any]:
    return {"mode": mode, "seed": seed, "box": box.as_list()}


def response_body(
    predictions: list[dict[str, Any]], embedding: dict[str, Any], crop: dict[str, Any], model: ModelIdentity
) -> dict[str, Any]:
    """The answer for one image (the contract in ``classifier.postprocessing``)."""
    return {"predictions": predictions, "embedding": embedding, "crop": crop, "model": model.as_dict()}


@dataclass(frozen=True)
class Prepared:
    """One image ready for the network: its input tensor, the crop it reports, and what decoding it cost."""

    tensor: torch.Tensor
    crop: dict[str, Any]
    decode_seconds: float


Item = Prepared | ItemError


@dataclass(frozen=True)
class Outputs:
    """The backend's rows for a batch's prepared items, in their order (None when every item had failed)."""

    logits: torch.Tensor | None
    embedding: torch.Tensor | None


@dataclass(frozen=True)
class Answer:
    """What the server sends back for one item: a status and its JSON body (the answer, or the error object)."""

    code: int
    body: dict[str, Any]
    error: ItemError | None = None  # the refusal, for its metrics cause

    @property
    def ok(self) -> bool:
        return self.error is None

    def json(self) -> bytes:
        return json.dumps(self.body).encode()


# ---------------------------------------------------------------- the service
@dataclass(frozen=True)
class ClassifierService:
    """A loaded model, the settings it is served with (model-config.yaml's ``handler:`` section), and who it is."""

    model_dir: Path
    settings: HandlerSettings
    preprocess: PreprocessConfig
    labels: dict[int, str]
    backend: Backend
    metadata: dict[str, Any]
    identity: ModelIdentity  # the name and version every answer reports

    @classmethod
    def load(
        cls,
        model_dir: Path,
        model_config: Mapping[str, Any] | None = None,
        *,
        device: torch.device | None = None,
        backend: str | None = None,
        threads: int | None = None,
        crop_mode: CropMode | None = None,
        cpu_count: int | None = None,
        identity: ModelIdentity | None = None,
    ) -> ClassifierService:
        """Read the model folder and its model-config, load the backend, and run one warm-up pass.

        Args:
            model_dir: a folder as ``make train`` writes it (or an unpacked .mar).
            model_config: the parsed model-config.yaml; its ``handler:`` section gives the settings.
            device: where the eager backend runs (default: the CPU).
            backend, threads, crop_mode: override the model-config's ``handler.backend``, ``threads``, ``crop_mode``.
            cpu_count: cores to size threads from (default: what this container may use, :func:`usable_cpus`).
            identity: the name and version the answers report. A server passes the ones it registered the model
                under; by default they are read from ``model_dir`` (:func:`classifier.versions.model_identity`).
        """
        settings = HandlerSettings.from_model_config(model_config, usable_cpus() if cpu_count is None else cpu_count)
        settings = dataclasses.replace(
            settings,
            backend=backend or settings.backend,
            threads=threads or settings.threads,
            crop_mode=crop_mode or settings.crop_mode,
        )
        # The backend loads with every thread (ONNX Runtime and OpenVINO size their own pools from it); torch then
        # keeps only what it needs next to them (classifier.backends.torch_threads says why).
        torch.set_num_threads(settings.threads)
        preprocess = read_preprocess_config(model_dir, settings.max_image_pixels)
        identity = identity or model_identity(model_dir)  # before the backend loads: a bad version fails at once
        loaded = load_backend(settings.backend, model_dir, device or torch.device("cpu"), settings.threads)
        torch.set_num_threads(torch_threads(loaded.name, settings.threads))
        # One pass now, so that the first request does not pay for lazy initialisation.
        loaded(torch.zeros(1, 3, preprocess.input_size, preprocess.input_size))
        return cls(model_dir, settings, preprocess, read_labels(model_dir), loaded, read_metadata(model_dir), identity)

    def prepare(self, body: bytes | bytearray, seed: Any = None, request_id: str | None = None) -> Item:
        """Decode and preprocess one request's image, or the error the client gets for it.

        Args:
            body: the image bytes as they arrived.
            seed: the raw seed (header, form field, flag) or None; refused with 400 when not an integer in range.
            request_id: names the request in the message of an internal error, whose traceback goes to the log.
        """
        mode = self.settings.crop_mode
        try:
            check_body_size(len(body), self.settings.max_body_bytes)
            used_seed = resolve_seed(mode, parse_seed(seed))
            timings: dict[str, float] = {}
            tensor, box = preprocess_bytes(body, self.preprocess, mode, used_seed, self.settings.region_decode, timings)
        except ItemError as exc:
            return exc
        except ImageDecodeError as exc:
            return ItemError(str(exc), cause="undecodable_image")
        except Exception:  # a bug of ours, not the client's: a 500 for this item alone, not its whole batch
            logger.exception("preprocessing failed for request %s", request_id)
            named = f" (request id {request_id})" if request_id else ""
            return ItemError(
                f"internal error while processing the image{named}; the server log has the details", 500, "internal_error"
            )
        return Prepared(tensor, crop_info(mode, used_seed, box), timings["decode"])

    def predict(self, items: Sequence[Item]) -> Outputs:
        """One backend call for the batch's prepared items; refused items take no row."""
        tensors = [item.tensor for item in items if isinstance(item, Prepared)]
        if not tensors:
            return Outputs(None, None)
        logits, embedding = self.backend(torch.stack(tensors))
        return Outputs(logits, embedding)

    def encode(self, items: Sequence[Item], outputs: Outputs) -> list[Answer]:
        """Each item's answer, in order: its top-k, embedding statistics, crop and model, or its error object.

        An error object names no model: it keeps the shape of the errors TorchServe's frontend answers itself
        (404, 503, ...), which cannot, so that a client reads every error one way.
        """
        predictions = top_k_predictions(outputs.logits, self.labels, self.settings.topk) if outputs.logits is not None else []
        stats = embedding_stats(outputs.embedding) if outputs.embedding is not None else []
        answers, row = [], 0
        for item in items:
            if isinstance(item, ItemError):
                answers.append(Answer(item.code, error_dict(str(item), item.code), item))
                continue
            answers.append(Answer(200, response_body(predictions[row], stats[row], item.crop, self.identity)))
            row += 1
        return answers

    def answer(self, items: Sequence[Item]) -> list[Answer]:
        """:meth:`predict` then :meth:`encode`: the batch's answers, in order."""
        return self.encode(items, self.predict(items))
