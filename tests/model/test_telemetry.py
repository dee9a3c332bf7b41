"""The handler's metrics, as TorchServe's worker writes them ([METRICS] log lines), with no server."""

import json
import logging
import re

import pytest
import yaml

from handlers.classifier_handler import ClassifierHandler
from tests.conftest import REPO, encode, random_image
from tests.model.test_handler import make_context, run


@pytest.fixture(scope="module")
def handler(tiny_model_dir):
    h = ClassifierHandler()
    h.initialize(make_context(tiny_model_dir))
    return h


METRIC_LINE = re.compile(r"\[METRICS\](?P<name>\w+)\.(?P<unit>\w+):(?P<value>[^|]+)\|#(?P<dims>[^|]*)\|#type:(?P<type>\w+)")


def declared_model_metrics() -> dict[str, tuple[str, list[str]]]:
    config = yaml.safe_load((REPO / "monitoring" / "ts-metrics.yaml").read_text())
    return {m["name"]: (kind, m["dimensions"]) for kind, metrics in config["model_metrics"].items() for m in metrics}


def emitted(caplog) -> list[dict]:
    lines = [METRIC_LINE.search(r.getMessage()) for r in caplog.records if "[METRICS]" in r.getMessage()]
    return [
        {**m.groupdict(), "dims": dict(d.split(":", 1) for d in m["dims"].split(",") if d), "value": float(m["value"])}
        for m in lines
        if m
    ]


def test_a_batch_writes_every_model_metric_as_declared(handler, tiny_model_dir, caplog):
    caplog.set_level(logging.INFO, logger="ts.metrics")
    good = encode(random_image(200, 160, seed=3), "PNG")
    run(handler, tiny_model_dir, [{"body": good}, {"body": b"not an image"}, {"body": {"json": 1}}, {"body": good}])
    metrics = emitted(caplog)
    declared = declared_model_metrics()
    for m in metrics:  # the frontend drops a metric that its config does not declare, with exactly these labels
        assert m["name"] in declared, f"{m['name']} is not declared in monitoring/ts-metrics.yaml"
        kind, dims = declared[m["name"]]
        assert m["type"].lower() == kind and list(m["dims"]) == dims, m
    names = {m["name"] for m in metrics}
    assert {
        "classifier_stage_duration_seconds",
        "classifier_handler_duration_seconds",
        "classifier_batch_size_images",
        "classifier_top1_confidence_ratio",
        "classifier_embedding_mean",
        "classifier_embedding_variance",
        "classifier_predictions_total",
        "classifier_request_errors_total",
    } <= names
    stages = {m["dims"]["stage"] for m in metrics if m["name"] == "classifier_stage_duration_seconds"}
    assert stages == {"decode", "preprocess", "inference", "postprocess"}
    errors = sorted((m["dims"]["code"], m["dims"]["cause"]) for m in metrics if m["name"] == "classifier_request_errors_total")
    assert errors == [("400", "undecodable_image"), ("415", "json_body")]
    assert sum(m["value"] for m in metrics if m["name"] == "classifier_predictions_total") == 2
    [batch] = [m["value"] for m in metrics if m["name"] == "classifier_batch_size_images"]
    assert batch == 4


def test_drift_gauges_appear_once_the_window_has_its_minimum(handler, tiny_model_dir, caplog):
    caplog.set_level(logging.INFO, logger="ts.metrics")
    reference = json.loads((tiny_model_dir / "metadata.json").read_text())["drift_reference"]
    assert reference["statistic"] == "psi" and handler.telemetry.drift is not None
    needed = handler.telemetry.drift.min_samples - len(handler.telemetry.drift)
    images = [{"body": encode(random_image(120, 120, seed=s), "PNG")} for s in range(8)]
    for _ in range(0, max(needed, 0) + 8, 8):
        run(handler, tiny_model_dir, images)
    psi = {m["dims"]["signal"]: m["value"] for m in emitted(caplog) if m["name"] == "classifier_drift_psi"}
    assert set(psi) == {"embedding_mean", "embedding_variance", "confidence", "predicted_class"}
    assert all(v >= 0 for v in psi.values())
