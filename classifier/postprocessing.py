"""Turn model outputs into the response contract. Pure functions shared by the handler and clients.

Response for one image::

    {"predictions": [{"label": str, "index": int, "probability": float}, ...],   # top-k, sorted
     "embedding": {"mean": float, "variance": float, "dim": int},
     "crop": {"mode": "random" | "center", "seed": int | None, "box": [left, top, right, bottom]},
     "model": {"name": str, "version": str}}

``variance`` is the population variance (divide by ``dim``, not ``dim - 1``) over
the embedding's dimensions.

``model`` (added compatibly after the first three keys) names the model that answered: TorchServe's model name and
the archive's version, the one its management API routes by (``classifier.versions``). A failed item's body is
``{"code": int, "type": str, "message": str}``, the shape of TorchServe's own errors, and names no model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def top_k_predictions(logits: torch.Tensor, labels: Mapping[int, str] | Sequence[str], k: int = 2) -> list[list[dict[str, Any]]]:
    """Softmax over classes, then the ``k`` most probable per row, most probable first.

    Args:
        logits: ``(N, C)`` raw scores.
        labels: class index -> name. Missing names fall back to the index as a string.
        k: how many to keep; capped at ``C``.

    Returns:
        One list of ``{"label", "index", "probability"}`` dicts per row.
    """
    probs = torch.softmax(logits.float(), dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [
            {"label": _label(labels, i), "index": i, "probability": p}
            for i, p in zip(row_idx.tolist(), row_val.tolist(), strict=True)
        ]
        for row_idx, row_val in zip(indices, values, strict=True)
    ]


def embedding_stats(embeddings: torch.Tensor) -> list[dict[str, Any]]:
    """Mean and population variance of each ``(D,)`` row of an ``(N, D)`` embedding batch.

    Computed row by row in float64 so a row's numbers do not depend on which
    other requests shared its batch (a batched reduction changes summation order).
    """
    rows = embeddings.double().numpy()
    return [{"mean": float(row.mean()), "variance": float(row.var()), "dim": int(row.shape[0])} for row in rows]


def error_dict(message: str, code: int = 400) -> dict[str, Any]:
    """A failed item: ``{"code": 400, "type": "InvalidInput", "message": ...}``."""
    kind = "InvalidInput" if 400 <= code < 500 else "InternalServerError"
    return {"code": code, "type": kind, "message": message}


def error_body(message: str, code: int = 400) -> bytes:
    """The JSON body of a failed item (``error_dict`` encoded)."""
    return json.dumps(error_dict(message, code)).encode()


def _label(labels: Mapping[int, str] | Sequence[str], index: int) -> str:
    try:
        return str(labels[index])
    except (KeyError, IndexError):
        return str(index)
