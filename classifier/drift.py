"""Input drift: a reference saved at training time, and an online score against it. Pure numpy, no server.

Four signals per answer, all already computed for the response: the embedding's mean and variance,
the top-1 probability (confidence) and the predicted class.

The score is the population stability index (PSI) of a window of recent answers against the reference:

    PSI = sum over bins of (observed - expected) * ln(observed / expected)

with the bins fixed at training time: deciles of each continuous signal on held-out data, and the classes
themselves for the predicted class. Why PSI rather than a two-sample KS test:

- one statistic for all four signals, the categorical class mix included (KS needs an ordering);
- it is a symmetrised KL divergence, so it sees a change of shape as well as of location, and its usual
  reading (< 0.1 stable, 0.1-0.25 moderate shift, > 0.25 significant shift) gives the alert threshold;
- the reference is 10 bin edges per signal, not the held-out sample itself, and an update is O(bins);
- a KS p-value over a sliding window goes to zero for any visible shift once the window is large, which
  makes it a poor gauge to plot; PSI stays on one interpretable scale.

Its noise floor under no drift is about (bins - 1) * (1 / window + 1 / reference size), so the window is
a trade-off between that floor and how quickly a shift shows (docs/monitoring.md measures both).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONTINUOUS_SIGNALS: tuple[str, ...] = ("embedding_mean", "embedding_variance", "confidence")
SIGNALS: tuple[str, ...] = (*CONTINUOUS_SIGNALS, "predicted_class")
# Empty bins would make ln(observed / expected) infinite; this floor keeps one empty bin's
# contribution large (a clear signal) but finite.
PROPORTION_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftReference:
    """What a healthy stream looks like, from held-out data through the serving preprocessing.

    ``edges[s]`` are the interior bin edges of signal ``s`` (bins: (-inf, e0], (e0, e1], ..., (e_last, inf)),
    ``expected[s]`` the share of held-out answers in each bin; for ``predicted_class`` the bins are the classes.
    """

    edges: Mapping[str, Sequence[float]]
    expected: Mapping[str, Sequence[float]]
    samples: int

    def to_dict(self) -> dict:
        return {
            "statistic": "psi",
            "samples": self.samples,
            "edges": {k: list(v) for k, v in self.edges.items()},
            "expected": {k: list(v) for k, v in self.expected.items()},
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> DriftReference:
        missing = set(SIGNALS) - set(values.get("expected", {}))
        if values.get("statistic") != "psi" or missing:
            raise ValueError(f"not a PSI drift reference with signals {list(SIGNALS)} (missing {sorted(missing)})")
        return cls(edges=dict(values["edges"]), expected=dict(values["expected"]), samples=int(values["samples"]))


def build_reference(signals: Mapping[str, np.ndarray], predicted: np.ndarray, num_classes: int, bins: int = 10) -> DriftReference:
    """Quantile bins and class frequencies of held-out answers.

    Args:
        signals: ``(N,)`` values of each of ``CONTINUOUS_SIGNALS``.
        predicted: ``(N,)`` predicted class indices.
        num_classes: number of classes, so a class never predicted on held-out data still has a bin.
        bins: quantile bins per continuous signal.

    Returns:
        The reference. Tied values (e.g. a confidence saturated at 1.0) merge bins, so a signal may
        end up with fewer than ``bins`` bins.
    """
    edges, expected = {}, {}
    for name in CONTINUOUS_SIGNALS:
        values = np.asarray(signals[name], dtype=np.float64)
        interior = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        edges[name] = interior.tolist()
        expected[name] = (bin_counts(values, interior) / len(values)).tolist()
    predicted = np.asarray(predicted, dtype=np.int64)
    expected["predicted_class"] = (np.bincount(predicted, minlength=num_classes) / len(predicted)).tolist()
    return DriftReference(edges=edges, expected=expected, samples=len(predicted))


def bin_counts(values: np.ndarray, interior_edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """How many ``values`` fall in each bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    index = np.searchsorted(np.asarray(interior_edges, dtype=np.float64), values, side="left")
    return np.bincount(index, minlength=len(interior_edges) + 1).astype(np.float64)


def psi(expected: Sequence[float] | np.ndarray, observed_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index of observed bin counts against expected bin shares (0 = identical)."""
    observed = np.asarray(observed_counts, dtype=np.float64)
    total = observed.sum()
    if total <= 0:
        return math.nan
    p = np.maximum(observed / total, PROPORTION_FLOOR)
    q = np.maximum(np.asarray(expected, dtype=np.float64), PROPORTION_FLOOR)
    return float(np.sum((p - q) * np.log(p / q)))


class DriftMonitor:
    """The last ``window`` answers, scored against a reference. Not thread-safe: one per worker.

    ``add`` is O(1) per answer (a bin index into a ring buffer and a running count per bin),
    ``scores`` is O(bins), so the handler can afford both on every batch.
    """

    def __init__(self, reference: DriftReference, window: int = 500, min_samples: int = 100):
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError(f"need window >= 1 and 1 <= min_samples <= window, got window={window}, min_samples={min_samples}")
        self.reference, self.window, self.min_samples = reference, window, min_samples
        self._edges = {name: np.asarray(reference.edges[name], dtype=np.float64) for name in CONTINUOUS_SIGNALS}
        sizes = {name: len(reference.expected[name]) for name in SIGNALS}
        self._counts = {name: np.zeros(size, dtype=np.int64) for name, size in sizes.items()}
        self._recent: deque[tuple[int, ...]] = deque()

    def __len__(self) -> int:
        return len(self._recent)

    def add(self, embedding_mean: float, embedding_variance: float, confidence: float, predicted_class: int) -> None:
        """Record one answer, forgetting the oldest once the window is full."""
        values = (embedding_mean, embedding_variance, confidence)
        row = tuple(int(np.searchsorted(self._edges[n], v, side="left")) for n, v in zip(CONTINUOUS_SIGNALS, values, strict=True))
        classes = len(self._counts["predicted_class"])
        row = (*row, predicted_class if 0 <= predicted_class < classes else classes - 1)
        if len(self._recent) == self.window:
            for name, old in zip(SIGNALS, self._recent.popleft(), strict=True):
                self._counts[name][old] -= 1
        for name, new in zip(SIGNALS, row, strict=True):
            self._counts[name][new] += 1
        self._recent.append(row)

    def scores(self) -> dict[str, float] | None:
        """PSI per signal over the current window, or None until ``min_samples`` answers arrived."""
        if len(self._recent) < self.min_samples:
            return None
        return {name: psi(self.reference.expected[name], self._counts[name]) for name in SIGNALS}


def signals_from_outputs(probabilities: np.ndarray, embeddings: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The drift signals of a batch of model outputs, as the response computes them.

    Args:
        probabilities: ``(N, C)`` softmax outputs.
        embeddings: ``(N, D)`` embeddings.

    Returns:
        ``CONTINUOUS_SIGNALS`` values, each ``(N,)``, and the ``(N,)`` predicted classes.
    """
    rows = np.asarray(embeddings, dtype=np.float64)
    probs = np.asarray(probabilities, dtype=np.float64)
    signals = {"embedding_mean": rows.mean(axis=1), "embedding_variance": rows.var(axis=1), "confidence": probs.max(axis=1)}
    return signals, probs.argmax(axis=1)
