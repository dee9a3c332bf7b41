"""Reading one TorchServe request: the image bytes and the optional seed. Pure and server-free."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Request fields that may carry the image: the raw body ("body" for curl -T /
# --data-binary), a multipart form field, or a gRPC input map entry.
IMAGE_FIELDS = ("data", "body", "file", "image")
MAX_SEED = 2**63 - 1
SEED_HEADER = "x-seed"


class RequestError(ValueError):
    """A problem with one request, reported to its client with ``code``.

    ``cause`` is a short fixed name for the metrics (``classifier_request_errors_total``): a bounded label,
    unlike the message, which may quote the request.
    """

    def __init__(self, message: str, code: int = 400, cause: str = "invalid_input"):
        super().__init__(message)
        self.code, self.cause = code, cause


def parse_seed(value: Any) -> int | None:
    """The optional ``seed`` request parameter (form field, header or gRPC input) as an int."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    try:
        seed = int(text.strip())
    except ValueError:
        raise RequestError(f"seed must be an integer in [0, {MAX_SEED}], got {text[:40]!r}", cause="invalid_seed") from None
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be an integer in [0, {MAX_SEED}], got {seed}", cause="invalid_seed")
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
        raise RequestError(
            f"no image in the request: send the image as the body (curl -T img.png) "
            f"or as a form field named one of {list(IMAGE_FIELDS)}",
            cause="no_image",
        )
    if isinstance(value, (bytes, bytearray)):
        if max_bytes is not None and len(value) > max_bytes:
            raise RequestError(f"image body is {len(value)} bytes, over the limit of {max_bytes} bytes", 413, "body_too_large")
        return bytes(value)
    if isinstance(value, (dict, list)):
        raise RequestError(
            "request body is JSON; send the raw image bytes (curl -T img.png URL) or a multipart form field 'data'",
            415,
            "json_body",
        )
    if isinstance(value, str):
        raise RequestError("request body is text, not an image; send the raw image bytes", 415, "text_body")
    raise RequestError(f"unsupported request payload of type {type(value).__name__}", cause="unsupported_payload")
