"""One image's way from bytes to its answer, in the pieces every consumer shares.

The TorchServe handler and the command-line predictor (``python -m classifier predict``) both call
these, so a seed, a crop record, an answer and a refusal mean the same thing wherever the model runs:

    check_body_size -> resolve_seed -> preprocessing.preprocess_bytes -> crop_info
    backend -> postprocessing.top_k_predictions / embedding_stats -> response_body

A failure of one image is an :class:`ItemError`: its message and the HTTP status the server answers with.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from classifier.limits import MAX_SEED, SEED_BITS
from classifier.transforms import CropBox, PreprocessConfig


def read_preprocess_config(model_dir: Path, max_image_pixels: int) -> PreprocessConfig:
    """The preprocessing the model was trained with (its metadata.json), under the served pixel limit."""
    metadata = json.loads((model_dir / "metadata.json").read_text())
    return PreprocessConfig.from_dict({**metadata["preprocessing"], "max_image_pixels": max_image_pixels})


def read_labels(model_dir: Path) -> dict[int, str]:
    """Class index -> name, from the model's index_to_name.json."""
    names = json.loads((model_dir / "index_to_name.json").read_text())
    return {int(k): v for k, v in names.items()}


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


def resolve_seed(mode: str, seed: int | None, draw=random.getrandbits) -> int | None:
    """The seed an image is cropped with, as the answer reports it.

    A centre crop has no randomness, so its seed is None whatever was asked. A random crop without
    a seed draws one (``draw(SEED_BITS)``), so any answer can be reproduced by sending its reported seed.
    """
    if mode == "center":
        return None
    return draw(SEED_BITS) if seed is None else seed


def crop_info(mode: str, seed: int | None, box: CropBox) -> dict[str, Any]:
    return {"mode": mode, "seed": seed, "box": box.as_list()}


def response_body(predictions: list[dict[str, Any]], embedding: dict[str, Any], crop: dict[str, Any]) -> dict[str, Any]:
    """The answer for one image (the contract in ``classifier.postprocessing``)."""
    return {"predictions": predictions, "embedding": embedding, "crop": crop}
