"""Accuracy guard: every optimized backend agrees with eager fp32 on a fixed held-out set."""

import random

import pytest
import torch

from classifier.backends import build_backend, load_backend
from classifier.transforms import PreprocessConfig, zoom_crop_pad
from training import synthetic

# Largest allowed |p_backend - p_eager| on eager's top-2 classes. On the default ResNet50 the
# measured maxima were 0.007 (bf16) and 0.013 (int8): see docs/optimization.md.
TOLERANCE = {"onnxruntime": 1e-4, "openvino": 1e-4, "openvino-bf16": 0.03, "onnxruntime-int8": 0.05, "openvino-int8": 0.05}
# Top-1 flips happen on near-ties: with both top-2 probabilities within TOLERANCE, eager's top-1 can only lose to
# its runner-up when their margin is under 2 x TOLERANCE. Such flips are allowed up to 2% of the images; any flip
# on a clearer image fails. (The tiny test model has ~6% of images within 0.1 of a tie; the default ResNet50 kept
# 100% agreement: docs/optimization.md.)
MIN_AGREEMENT = 0.98


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    """200 generated images the model never saw (another seed than training), with seeded crops."""
    rng = random.Random(2024)
    images = [img for img, _ in synthetic.generate(50, seed=90210)]
    return torch.stack([zoom_crop_pad(img, PreprocessConfig(), "random", rng)[0] for img in images])


def probabilities(backend, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([backend(x[i : i + 16])[0] for i in range(0, len(x), 16)]).softmax(1)


@pytest.fixture(scope="module")
def eager_probs(tiny_model_dir, held_out) -> torch.Tensor:
    return probabilities(build_backend("eager", tiny_model_dir, torch.device("cpu"), 2), held_out)


@pytest.mark.parametrize("kind", list(TOLERANCE))
def test_optimized_backend_agrees_with_eager(kind, tiny_model_dir, held_out, eager_probs):
    # What this host really runs: the backend asked for, or its logged fp32 fallback on older CPUs.
    backend = load_backend(kind, tiny_model_dir, torch.device("cpu"), 2)
    assert backend.name in (kind, kind.split("-")[0])
    probs = probabilities(backend, held_out)
    flipped = probs.argmax(1) != eager_probs.argmax(1)
    agreement = 1 - flipped.float().mean().item()
    assert agreement >= MIN_AGREEMENT, f"{kind}: top-1 agrees on {agreement:.1%} of {len(held_out)} images"
    top2_values = eager_probs.topk(2, dim=1).values
    margins = top2_values[:, 0] - top2_values[:, 1]
    clear_flips = (flipped & (margins > 2 * TOLERANCE[backend.name])).sum().item()
    assert clear_flips == 0, f"{kind}: {clear_flips} images changed top-1 although eager's margin was over 2x tolerance"
    top2 = eager_probs.topk(2, dim=1).indices
    drift = (probs.gather(1, top2) - eager_probs.gather(1, top2)).abs().max().item()
    assert drift <= TOLERANCE[backend.name], f"{backend.name}: top-2 probabilities drift by up to {drift:.4f}"
