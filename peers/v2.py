"""The KServe v2 inference protocol as a client speaks it to the Triton peer: one image in, our JSON answer out.

Standard library only, so the parity test and the load client run it from .venv. The image travels with Triton's
binary-data extension (a JSON header, then the raw tensor): base64 or a JSON list would add a third to a 5 MB photo.
"""

from __future__ import annotations

import json
import struct
from typing import Any

OUTPUT = "answer"


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def request(image: bytes, seed: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one v2 infer request for ``image`` (a BYTES tensor of shape [1, 1])."""
    # A BYTES element on the wire is its 4-byte little-endian length, then its bytes.
    tensor = struct.pack("<I", len(image)) + image
    header = json.dumps(
        {
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": len(tensor)}}],
            "outputs": [{"name": OUTPUT, "parameters": {"binary_data": False}}],
        }
    ).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    return header + tensor, headers


def answer(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """The status and our JSON from a v2 response: the ``answer`` output on a 200, Triton's error object otherwise."""
    parsed = json.loads(body)
    if status != 200:
        return status, parsed
    (output,) = (o for o in parsed["outputs"] if o["name"] == OUTPUT)
    return status, json.loads(output["data"][0])
