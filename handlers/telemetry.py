"""What the handler tells Prometheus, through TorchServe's own metrics API (``context.metrics``).

Every metric here is declared in monitoring/ts-metrics.yaml (config.properties' ``metrics_config``),
which the frontend reads to build its Prometheus collectors; the worker only writes ``[METRICS]`` lines.
Names carry their unit, labels are bounded (stage, class, signal, status code and error cause),
nothing is per request. docs/monitoring.md lists them.

Each value is one log line from the worker that the frontend parses, which is most of the cost, so values
that need not be per image (decode time, drift gauges) are written once per batch or once a second.

TorchServe 0.12 builds histograms with the Prometheus client's default buckets (5 ms to 10 s), which is
why durations are recorded in seconds. The drift logic itself lives in ``classifier.drift``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes

from classifier.drift import DriftMonitor, DriftReference

# The drift window: see classifier/drift.py for the statistic and docs/monitoring.md for the measured
# noise floor and reaction time. 500 answers is 5 s at 100 req/s and about 8 minutes at 1 req/s.
DRIFT_WINDOW = 500
DRIFT_MIN_SAMPLES = 100
DRIFT_GAUGE_INTERVAL_S = 1.0

COUNTER, GAUGE, HISTOGRAM = MetricTypes.COUNTER, MetricTypes.GAUGE, MetricTypes.HISTOGRAM


class ModelTelemetry:
    """Records one worker's model metrics; the handler calls it a few times per batch."""

    def __init__(self, model_name: str, labels: Mapping[int, str], drift_reference: Mapping[str, Any] | None):
        self.model_name, self.labels = model_name, labels
        reference = DriftReference.from_dict(drift_reference) if drift_reference else None
        self.drift = DriftMonitor(reference, DRIFT_WINDOW, DRIFT_MIN_SAMPLES) if reference else None
        self.drift_emitted = -math.inf

    def _emit(self, metrics, name: str, value: float, unit: str, kind: MetricTypes, **labels: str) -> None:
        # ModelName and Level are given explicitly, so the series keep the same labels whether or not
        # TorchServe knows the batch's request ids (it does not during initialize).
        dims = [Dimension(k, str(v)) for k, v in labels.items()]
        dims += [Dimension("ModelName", self.model_name), Dimension("Level", "Model")]
        metrics.add_metric(name, value, unit, dimensions=dims, metric_type=kind)

    def worker_started(self, metrics) -> None:
        """The frontend keeps the counter across worker restarts, so its increase counts restarts."""
        self._emit(metrics, "classifier_worker_starts_total", 1, "Count", COUNTER)

    @contextmanager
    def timed(self, metrics, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self._emit(metrics, "classifier_stage_duration_seconds", time.perf_counter() - started, "Seconds", HISTOGRAM, stage=stage)

    def decoded(self, metrics, seconds: Sequence[float]) -> None:
        """Decoding time per image, as the mean over a batch: one line per batch instead of one per image."""
        if seconds:
            self._emit(
                metrics, "classifier_stage_duration_seconds", sum(seconds) / len(seconds), "Seconds", HISTOGRAM, stage="decode"
            )

    def batch(self, metrics, size: int, seconds: float) -> None:
        """One handled batch: its size, and the handler time every request in it waited for."""
        self._emit(metrics, "classifier_batch_size_images", size, "Images", HISTOGRAM)
        self._emit(metrics, "classifier_handler_duration_seconds", seconds, "Seconds", HISTOGRAM)

    def error(self, metrics, code: int, cause: str) -> None:
        self._emit(metrics, "classifier_request_errors_total", 1, "Count", COUNTER, code=str(code), cause=cause)

    def answers(self, metrics, predictions: Sequence[Sequence[Mapping]], stats: Sequence[Mapping]) -> None:
        """The served answers of a batch: class mix, confidence and embedding statistics, then drift."""
        per_class: dict[str, int] = {}
        for top, emb in zip(predictions, stats, strict=True):
            best = top[0]
            per_class[best["label"]] = per_class.get(best["label"], 0) + 1
            self._emit(metrics, "classifier_top1_confidence_ratio", best["probability"], "Ratio", HISTOGRAM)
            self._emit(metrics, "classifier_embedding_mean", emb["mean"], "Value", HISTOGRAM)
            self._emit(metrics, "classifier_embedding_variance", emb["variance"], "Value", HISTOGRAM)
            if self.drift is not None:
                self.drift.add(emb["mean"], emb["variance"], best["probability"], best["index"])
        for label, count in per_class.items():
            self._emit(metrics, "classifier_predictions_total", count, "Count", COUNTER, **{"class": label})
        # A gauge is only read at scrape time: one update a second is enough, and saves four lines per batch.
        now = time.monotonic()
        if self.drift is None or now - self.drift_emitted < DRIFT_GAUGE_INTERVAL_S:
            return
        scores = self.drift.scores()
        if scores is not None:
            self.drift_emitted = now
            for signal, score in scores.items():
                self._emit(metrics, "classifier_drift_psi", score, "PSI", GAUGE, signal=signal)
