"""The drift statistic on numbers whose distributions we control."""

import numpy as np
import pytest

from classifier.drift import SIGNALS, DriftMonitor, DriftReference, bin_counts, build_reference, psi

ALERT = 0.25  # monitoring/alerts.yml fires above this


def reference_from(rng: np.random.Generator, n: int, classes: int = 4) -> DriftReference:
    signals = {
        "embedding_mean": rng.normal(0.5, 0.1, n),
        "embedding_variance": rng.gamma(2.0, 0.05, n),
        "confidence": rng.beta(8, 2, n),
    }
    return build_reference(signals, rng.integers(0, classes, n), classes)


def fill(monitor: DriftMonitor, rng: np.random.Generator, n: int, shift: float = 0.0, classes: int = 4) -> None:
    for mean, var, conf, cls in zip(
        rng.normal(0.5 + shift, 0.1, n), rng.gamma(2.0, 0.05, n), rng.beta(8, 2, n), rng.integers(0, classes, n), strict=True
    ):
        monitor.add(mean, var, conf, int(cls))


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift():
    expected = [0.25, 0.25, 0.25, 0.25]
    assert psi(expected, [10, 10, 10, 10]) == pytest.approx(0.0)
    small, large = psi(expected, [12, 10, 9, 9]), psi(expected, [30, 5, 3, 2])
    assert 0 < small < 0.05 < ALERT < large
    # an empty bin is a large but finite contribution
    assert np.isfinite(psi(expected, [0, 10, 10, 10]))


def test_reference_bins_are_deciles_and_survive_json():
    ref = reference_from(np.random.default_rng(0), 1000)
    for name in ("embedding_mean", "embedding_variance", "confidence"):
        assert len(ref.edges[name]) == 9 and np.allclose(ref.expected[name], 0.1, atol=0.002)
    assert sum(ref.expected["predicted_class"]) == pytest.approx(1.0)
    again = DriftReference.from_dict(ref.to_dict())
    assert again.to_dict() == ref.to_dict()
    with pytest.raises(ValueError, match="PSI drift reference"):
        DriftReference.from_dict({"statistic": "ks"})


def test_bins_include_their_upper_edge():
    assert bin_counts(np.array([0.0, 1.0, 1.5, 2.0, 3.0]), [1.0, 2.0]).tolist() == [2, 2, 1]


def test_the_window_forgets_old_answers():
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(reference_from(rng, 1000), window=200, min_samples=50)
    assert monitor.scores() is None
    fill(monitor, rng, 300, shift=0.5)  # a shifted burst...
    assert monitor.scores()["embedding_mean"] > ALERT
    fill(monitor, rng, 200)  # ...then a full window of healthy answers: the burst is gone
    assert len(monitor) == 200 and monitor.scores()["embedding_mean"] < ALERT


def test_false_alarm_rate_of_the_served_window_with_a_small_reference():
    """Window 500 (handlers/telemetry.py) against a 160-answer reference (the default training's held-out
    set), over 200 seeds of in-distribution streams: how often a signal crosses the alert threshold."""
    alarms, worst = 0, 0.0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        monitor = DriftMonitor(reference_from(rng, 160), window=500, min_samples=500)
        fill(monitor, rng, 500)
        scores = monitor.scores()
        worst = max(worst, *scores.values())
        alarms += any(v > ALERT for v in scores.values())
    print(f"in-distribution: {alarms}/200 windows over {ALERT} on any of {len(SIGNALS)} signals; worst PSI {worst:.3f}")
    assert alarms <= 2  # <= 1% per window, all four signals together


@pytest.mark.parametrize("shift, signal", [(0.1, "embedding_mean"), (0.2, "embedding_mean")])
def test_a_one_sigma_shift_is_flagged(shift, signal):
    rng = np.random.default_rng(7)
    monitor = DriftMonitor(reference_from(rng, 160), window=500)
    fill(monitor, rng, 500, shift=shift)
    score = monitor.scores()[signal]
    print(f"mean shifted by {shift / 0.1:.0f} sd: PSI {score:.3f}")
    assert score > ALERT
