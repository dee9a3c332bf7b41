"""Serving settings: the ``handler:`` section of model-config.yaml, as a typed dataclass.

The TorchServe handler and the command-line predictor both read it, so a setting means
the same thing wherever the model runs. Each default equals the value model-config.yaml ships
(tests/unit/test_settings.py), so a section that leaves a key out means what the shipped file says.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.limits import MAX_BODY_BYTES, MAX_IMAGE_PIXELS
from classifier.transforms import CropMode


@dataclass(frozen=True)
class HandlerSettings:
    """The ``handler:`` section of model-config.yaml."""

    backend: str = "openvino-int8"  # classifier.backends.resolve_backend falls back from it where it cannot run
    crop_mode: CropMode = "random"
    threads: int = 0  # 0: cores / workers
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_body_bytes: int = MAX_BODY_BYTES
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


def cpu_quota(cpu_max: str | None = None, cfs_quota_us: str | None = None, cfs_period_us: str | None = None) -> float | None:
    """Cores allowed by a cgroup CPU limit, or None when there is none.

    Args:
        cpu_max: cgroup v2 ``cpu.max``, e.g. ``"200000 100000"`` (2 cores) or ``"max 100000"`` (no limit).
        cfs_quota_us / cfs_period_us: cgroup v1 ``cpu.cfs_quota_us`` (``-1``: no limit) and ``cpu.cfs_period_us``.
    """
    if cpu_max is not None:
        quota, _, period = cpu_max.strip().partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    if cfs_quota_us is not None and cfs_period_us is not None and int(cfs_quota_us) > 0:
        return int(cfs_quota_us) / int(cfs_period_us)
    return None


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by the container's CPU limit.

    ``os.cpu_count()`` counts the node's cores, so in a Kubernetes pod limited to 2 of 64 cores a
    "threads = cores" rule would start 64 threads and be throttled. Rounded down (a 2.5-core limit gives
    2 threads, whose bursts the limit absorbs), never below 1.
    """

    def read(*parts: str) -> str | None:
        try:
            return cgroup_root.joinpath(*parts).read_text()
        except OSError:
            return None

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota(read("cpu.max"), read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us"))
    if quota is not None:
        cores = min(cores, math.floor(quota))
    return max(1, cores)
