"""What a correct answer looks like, for the load tests: pure functions, no locust import.

Each check returns ``None`` for a valid body, or a short reason that locust
records as the failure (so a run that answers 200 with a broken body still fails).
"""

from __future__ import annotations

import math
from typing import Any

FORMATS = ("ours", "stock")


def _probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def check_ours(body: Any, topk: int = 2) -> str | None:
    """Our handler: ``{"predictions": [{label, index, probability} x topk], "embedding": {mean, variance, dim}, ...,
    "model": {name, version}}``."""
    if not isinstance(body, dict):
        return f"expected a JSON object, got {type(body).__name__}"
    preds = body.get("predictions")
    if not isinstance(preds, list) or len(preds) != topk:
        return f"expected {topk} predictions, got {preds!r:.120}"
    for p in preds:
        if not isinstance(p, dict) or not isinstance(p.get("label"), str) or not p["label"]:
            return f"prediction without a label: {p!r:.120}"
        if not _probability(p.get("probability")):
            return f"probability not in [0, 1]: {p!r:.120}"
    if any(a["probability"] < b["probability"] for a, b in zip(preds, preds[1:], strict=False)):
        return "predictions not sorted by probability"
    emb = body.get("embedding")
    if not isinstance(emb, dict):
        return "no embedding"
    mean, variance = emb.get("mean"), emb.get("variance")
    if not isinstance(mean, (int, float)) or isinstance(mean, bool) or not math.isfinite(mean):
        return f"embedding mean is not a finite number: {mean!r}"
    if not isinstance(variance, (int, float)) or isinstance(variance, bool) or not (0.0 <= variance < math.inf):
        return f"embedding variance is not a finite number >= 0: {variance!r}"
    model = body.get("model")
    if not isinstance(model, dict) or not all(isinstance(model.get(key), str) and model[key] for key in ("name", "version")):
        return f"no model name and version: {model!r:.120}"
    return None


def check_stock(body: Any) -> str | None:
    """Stock TorchServe image_classifier: one JSON object ``{label: probability}``, most probable first."""
    if not isinstance(body, dict) or not body:
        return f"expected a non-empty JSON object label->probability, got {body!r:.120}"
    for label, prob in body.items():
        if not label or not _probability(prob):
            return f"bad label/probability pair {label!r}: {prob!r}"
    if sum(body.values()) > 1.0 + 1e-4:
        return f"probabilities sum to {sum(body.values()):.4f} > 1"
    return None


def check(body: Any, response_format: str) -> str | None:
    if response_format == "ours":
        return check_ours(body)
    if response_format == "stock":
        return check_stock(body)
    raise ValueError(f"Invalid response format {response_format!r}. Only {', '.join(FORMATS)} are supported.")
