"""Reading one TorchServe request, and the handler's settings: pure and server-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from handlers.preprocessing import PreprocessConfig

# Request fields that may carry the image: the raw body ("body" for curl -T /
# --data-binary), a multipart form field, or a gRPC input map entry.
IMAGE_FIELDS = ("data", "body", "file", "image")
MAX_SEED = 2**63 - 1
SEED_HEADER = "x-seed"


class RequestError(ValueError):
    """A problem with one request, reported to its client with ``code``."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class HandlerSettings:
    """The ``handler:`` section of model-config.yaml."""

    backend: str = "eager"
    crop_mode: str = "random"
    threads: int = 0  # 0: cores / workers
    max_image_pixels: int = PreprocessConfig.max_image_pixels
    # Below the frontend's max_request_size, so an oversized upload gets a 413 with a
    # reason; above that limit TorchServe can only reset the connection.
    max_body_bytes: int = 10 * 2**20
    topk: int = 2

    @classmethod
    def from_model_config(cls, model_yaml: Mapping[str, Any] | None, cpu_count: int) -> "HandlerSettings":
        model_yaml = model_yaml or {}
        section = dict(model_yaml.get("handler") or {})
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown handler settings {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        settings = cls(**section)
        if settings.crop_mode not in ("random", "center"):
            raise ValueError(f"Invalid crop_mode {settings.crop_mode!r}. Only 'random' and 'center' are supported.")
        if settings.threads <= 0:
            workers = int(model_yaml.get("minWorkers", 1) or 1)
            settings = cls(**{**section, "threads": max(1, cpu_count // workers)})
        return settings


def parse_seed(value: Any) -> int | None:
    """The optional ``seed`` request parameter (query string or gRPC input) as an int."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    try:
        seed = int(text.strip())
    except ValueError:
        raise RequestError(f"seed must be an integer in [0, {MAX_SEED}], got {text[:40]!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be an integer in [0, {MAX_SEED}], got {seed}")
    return seed


def find_seed(request: Mapping[str, Any], headers: Mapping[str, Any] | None) -> Any:
    """The raw seed: a ``seed`` input (multipart form field or gRPC input) or an ``X-Seed`` header.

    TorchServe 0.12 does not forward URL query parameters to handlers (pytorch/serve#989),
    so ``?seed=42`` cannot work; headers and form fields do reach the handler.
    """
    if "seed" in request:
        return request["seed"]
    for key, value in (headers or {}).items():
        if isinstance(key, str) and key.lower() == SEED_HEADER:
            return value
    return None


def extract_image(request: Mapping[str, Any], max_bytes: int | None = None) -> bytes:
    """The image bytes of one TorchServe request, or a RequestError saying what arrived instead."""
    for field in IMAGE_FIELDS:
        if field in request:
            value = request[field]
            break
    else:
        raise RequestError(f"no image in the request: send the image as the body (curl -T img.png) "
                           f"or as a form field named one of {list(IMAGE_FIELDS)}")
    if isinstance(value, (bytes, bytearray)):
        if max_bytes is not None and len(value) > max_bytes:
            raise RequestError(f"image body is {len(value)} bytes, over the limit of {max_bytes} bytes", 413)
        return bytes(value)
    if isinstance(value, (dict, list)):
        raise RequestError("request body is JSON; send the raw image bytes (curl -T img.png URL) "
                           "or a multipart form field 'data'", 415)
    if isinstance(value, str):
        raise RequestError("request body is text, not an image; send the raw image bytes", 415)
    raise RequestError(f"unsupported request payload of type {type(value).__name__}")
