"""Serving settings: the ``handler:`` section of model-config.yaml, as a typed dataclass.

The TorchServe handler and the command-line predictor both read it, so a setting means
the same thing wherever the model runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from classifier.preprocessing import PreprocessConfig


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
    # Decode only the JPEG pixels the crop needs (classifier/jpeg_region.py); same answers either way.
    region_decode: bool = True

    @classmethod
    def from_model_config(cls, model_yaml: Mapping[str, Any] | None, cpu_count: int) -> HandlerSettings:
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
