"""Inference backends behind one small interface, chosen when the model is loaded.

A backend is a callable ``(N, 3, S, S) float32 tensor -> (logits, embedding)``.
Only the backend that is asked for is imported, so a server never pays for (or
fails on) runtimes it does not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

Backend = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
BACKENDS = ("eager",)


def select_device(gpu_id: int | str | None, cuda_available: bool) -> torch.device:
    """CUDA device ``gpu_id`` when TorchServe assigned one and CUDA works, else the CPU."""
    if gpu_id is None or gpu_id == "" or not cuda_available:
        return torch.device("cpu")
    return torch.device(f"cuda:{int(gpu_id)}")


class EagerBackend:
    """The torch.export program (model.pt2) run eagerly by PyTorch, on CPU or CUDA."""

    name = "eager"

    def __init__(self, artifact: Path, device: torch.device):
        self.device = device
        self.module = torch.export.load(str(artifact)).module().to(device)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.module(batch.to(self.device, non_blocking=True))
        return logits.float().cpu(), embedding.float().cpu()


def load_backend(kind: str, model_dir: Path, device: torch.device) -> Backend:
    if kind == "eager":
        return EagerBackend(model_dir / "model.pt2", device)
    raise ValueError(f"Invalid backend {kind!r}. Only {', '.join(BACKENDS)} are supported.")
