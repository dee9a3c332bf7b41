"""The drift monitor on real image streams through the serving preprocessing and the tiny model.

Sizes are cut to what two shared cores afford (about 900 forward passes): a 200-image reference with
5 bins per signal and windows of 80 answers, where the served default is 10 bins and 500 answers. The noise
floor, (bins - 1) * (1 / window + 1 / reference), is 0.07 here and 0.07 for the served default against the
default 160-image reference. The false-alarm rate over many seeds is measured in tests/unit/test_drift.py.
"""

import random

import pytest
import torch

from classifier.backends import load_backend
from classifier.drift import DriftMonitor, build_reference, signals_from_outputs
from classifier.preprocessing import preprocess_bytes
from classifier.transforms import PreprocessConfig
from monitoring.drift_streams import SHIFTS, images, png_bytes

pytestmark = pytest.mark.slow

ALERT = 0.25  # monitoring/alerts.yml
WINDOW = 80


@pytest.fixture(scope="module")
def outputs(tiny_model_dir):
    """The drift signals of a stream, computed as the handler computes them (PNG bytes in, softmax and embedding out)."""
    backend = load_backend("eager", tiny_model_dir, torch.device("cpu"), torch.get_num_threads())
    config = PreprocessConfig()

    def run(shift: str, count: int, seed: int):
        rng = random.Random(seed)
        batch = torch.stack(
            [preprocess_bytes(png_bytes(img), config, "random", rng.getrandbits(63))[0] for img in images(shift, count, seed)]
        )
        with torch.inference_mode():
            logits, embedding = backend(batch)
        return signals_from_outputs(torch.softmax(logits.float(), 1).numpy(), embedding.float().numpy())

    return run


@pytest.fixture(scope="module")
def reference(outputs):
    signals, predicted = outputs("none", 200, seed=1000)
    return build_reference(signals, predicted, num_classes=4, bins=5)


def window_scores(reference, signals, predicted) -> dict[str, float]:
    monitor = DriftMonitor(reference, window=WINDOW, min_samples=WINDOW)
    for i in range(len(predicted)):
        monitor.add(signals["embedding_mean"][i], signals["embedding_variance"][i], signals["confidence"][i], int(predicted[i]))
    return monitor.scores()


def show(name: str, scores: dict[str, float]) -> str:
    return f"{name:>10}: " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())


def test_fresh_in_distribution_streams_do_not_drift(outputs, reference):
    worst = []
    for seed in (1, 2, 3):
        scores = window_scores(reference, *outputs("none", WINDOW, seed))
        print(show(f"seed {seed}", scores))
        worst.append(max(scores.values()))
    assert max(worst) < ALERT


@pytest.mark.parametrize("shift", [s for s in SHIFTS if s != "none"])
def test_shifted_streams_drift(outputs, reference, shift):
    scores = window_scores(reference, *outputs(shift, WINDOW, seed=7))
    print(show(shift, scores))
    if shift == "invert":
        # The generated colours are uniform over the RGB cube, which inversion maps onto itself:
        # inverted images are in-distribution here by construction (on photos they are not).
        assert max(scores.values()) < ALERT
    else:
        assert max(scores.values()) > ALERT
