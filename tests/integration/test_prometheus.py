"""A real Prometheus (Debian's binary) scrapes the real TorchServe and evaluates our alert rules."""

from __future__ import annotations

import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml

from serving.prometheus import INSTALL, PrometheusProcess
from tests.conftest import REPO
from training import synthetic

pytestmark = [pytest.mark.server, pytest.mark.slow]

FIRST_EVENT_ONLY = {"Requests5XX"}
DASHBOARD = REPO / "monitoring" / "grafana" / "classifier-dashboard.json"
# PromQL words that look like metric names but are not.
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def exported_names(metrics_text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or durations."""
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    expr = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b", "", expr)  # numbers, 1e6 included
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*(?!\s*\()\b", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]?", n)}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    if shutil.which("prometheus") is None:
        pytest.fail(f"prometheus is not installed; install it with: {INSTALL}")
    target = server.props["metrics_address"].removeprefix("http://")
    with PrometheusProcess([target], tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom


def wait_for(prom: PrometheusProcess, promql: str, ok, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = prom.query(promql)
        if ok(result) or time.monotonic() > deadline:
            return result
        time.sleep(1)


def test_prometheus_scrapes_our_model_metrics_and_loads_our_rules(server, prometheus, tmp_path):
    images = [p.read_bytes() for p in synthetic.write_folder(tmp_path, per_class=26, seed=21)]  # 104 answers: a drift window
    predict = f"{server.inference_url}/predictions/classifier"
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda body: requests.put(predict, data=body, timeout=120).status_code, images))
    assert statuses == [200] * len(images)
    assert requests.put(predict, data=b"not an image", timeout=60).status_code == 400

    def total(result):
        return sum(float(r["value"][1]) for r in result)

    served = wait_for(prometheus, 'sum(classifier_predictions_total{ModelName="classifier"})', lambda r: total(r) >= len(images))
    assert total(served) >= len(images)
    errors = wait_for(
        prometheus, 'classifier_request_errors_total{code="400",cause="undecodable_image"}', lambda r: total(r) >= 1
    )
    assert total(errors) >= 1
    drift = wait_for(prometheus, "classifier_drift_psi", lambda r: len(r) == 4)
    assert sorted(r["metric"]["signal"] for r in drift) == sorted(
        ["confidence", "embedding_mean", "embedding_variance", "predicted_class"]
    )
    print("drift PSI after", len(images), "in-distribution answers:", {r["metric"]["signal"]: r["value"][1] for r in drift})
    # Over the cumulative buckets, not a rate: on a busy machine some 1-second scrapes time out.
    p99 = prometheus.query('histogram_quantile(0.99, sum by (le) (classifier_stage_duration_seconds_bucket{stage="inference"}))')
    assert p99 and float(p99[0]["value"][1]) > 0

    groups = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert len(rules) == 9 and all(r["health"] == "ok" for r in rules.values()), rules

    # Every Grafana query and alert rule names a metric this server really exports. Requests5XX is the one
    # exception: TorchServe creates it at the first 5xx, which a healthy test server never answers.
    exported = exported_names(requests.get(f"{server.props['metrics_address']}/metrics", timeout=10).text)
    exported |= FIRST_EVENT_ONLY
    alert_rules = yaml.safe_load((REPO / "monitoring" / "alerts.yml").read_text())["groups"]
    recorded = {r["record"] for g in alert_rules for r in g["rules"] if "record" in r}
    for expr in dashboard_queries() + [r["expr"] for g in alert_rules for r in g["rules"]]:
        missing = metric_names(expr) - exported - recorded
        assert not missing, f"query {expr!r} names {missing}, which the server does not export"
