"""Reading one TorchServe request: the image bytes and the optional seed. Pure and server-free.

What TorchServe's frontend (HTTP body, multipart form, gRPC input map) and KServe's envelope hand the handler;
a refusal is the core's ItemError, so it is the same status, message and metrics cause everywhere.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from classifier.service import ItemError, check_body_size

# Request fields that may carry the image: the raw body ("body" for curl -T /
# --data-binary), a multipart form field, or a gRPC input map entry.
IMAGE_FIELDS = ("data", "body", "file", "image")
SEED_HEADER = "x-seed"
# Text that could be base64 (standard or URL-safe alphabet, padding); line breaks are removed first, since
# encoders wrap lines. Anything else in a text field is not an image in any encoding we accept.
BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def find_seed(request: Mapping[str, Any], headers: Mapping[str, Any] | None) -> Any:
    """The raw seed: a ``seed`` input (multipart form field or gRPC input) or an ``X-Seed`` header.

    TorchServe 0.12 does not forward URL query parameters to handlers (pytorch/serve#989),
    so ``?seed=42`` cannot work; headers and form fields do reach the handler.
    """
    if isinstance(request, Mapping) and "seed" in request:  # a bare KServe instance has no fields
        return request["seed"]
    for key, value in (headers or {}).items():
        if isinstance(key, str) and key.lower() == SEED_HEADER:
            return value
    return None


def unwrap(text: str) -> str:
    """Base64 text without its line breaks and surrounding whitespace (MIME encoders wrap at 76 columns)."""
    return "".join(line.strip() for line in text.strip().splitlines())


def decode_base64_image(text: str, field: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a base64-encoded image (KServe v1 sends ``{"instances": [{"data": "<base64>"}]}``).

    Raises ItemError 400 naming the cause when ``text`` is not valid base64, 413 when the decoded
    image would be over ``max_bytes`` (checked before decoding, so a huge string is never expanded).
    """
    compact = unwrap(text)
    if max_bytes is not None and len(compact) // 4 * 3 > max_bytes + 2:
        raise ItemError(f"base64 image in {field!r} decodes to over {max_bytes} bytes, the limit", 413, "body_too_large")
    urlsafe = "-" in compact or "_" in compact
    try:
        if urlsafe:
            image = base64.urlsafe_b64decode(compact.encode("ascii"))
        else:
            image = base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ItemError(
            f"{field!r} is not valid base64 ({exc}); send the image bytes base64-encoded", cause="bad_base64"
        ) from None
    if not image:
        raise ItemError(f"{field!r} is empty: no image to classify", cause="empty_body")
    if max_bytes is not None and len(image) > max_bytes:
        raise ItemError(f"image in {field!r} is {len(image)} bytes, over the limit of {max_bytes} bytes", 413, "body_too_large")
    return image


def extract_image(request: Mapping[str, Any], max_bytes: int | None = None) -> bytes:
    """The image bytes of one TorchServe request, or a ItemError saying what arrived instead.

    Bytes are taken as they are. Text is taken as base64 (a KServe v1 instance, a JSON client), and so is
    ``{"b64": "..."}``; text that cannot be base64 at all is refused with 415, as before. A bare value
    instead of a field map is a KServe instance given as such (``{"instances": ["<base64>"]}``).
    """
    if not isinstance(request, Mapping):
        request = {"data": request}
    for field in IMAGE_FIELDS:
        if field in request:
            value = request[field]
            break
    else:
        raise ItemError(
            f"no image in the request: send the image as the body (curl -T img.png) "
            f"or as a form field named one of {list(IMAGE_FIELDS)}",
            cause="no_image",
        )
    if isinstance(value, (bytes, bytearray)):
        check_body_size(len(value), max_bytes)
        return bytes(value)
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        return decode_base64_image(value["b64"], f"{field}.b64", max_bytes)
    if isinstance(value, (dict, list)):
        raise ItemError(
            "request body is JSON; send the raw image bytes (curl -T img.png URL), a multipart form field 'data', "
            'or base64 as {"instances": [{"data": "<base64>"}]} to /v1/models/classifier:predict',
            415,
            "json_body",
        )
    if isinstance(value, str):
        if BASE64_TEXT.fullmatch(unwrap(value)):
            return decode_base64_image(value, field, max_bytes)
        raise ItemError("request body is text, not an image; send the raw image bytes (or base64 of them)", 415, "text_body")
    raise ItemError(f"unsupported request payload of type {type(value).__name__}", cause="unsupported_payload")
