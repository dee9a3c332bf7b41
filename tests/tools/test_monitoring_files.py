"""Prometheus rules and configs checked by the real promtool; the Grafana dashboard and docker-compose.yml
checked against each other and against the files they mount."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

MONITORING = REPO / "monitoring"
INSTALL = "apt-get install -y prometheus (Debian/Ubuntu; it ships promtool), or `make install-monitoring`"


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not installed; install it with: {INSTALL}")
    return subprocess.run([path, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)


def test_alert_rules_pass_promtool_check():
    out = promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout


def test_alert_rules_unit_tests_pass():
    """alerts_test.yml holds, for every alert, series that fire it and series that must not."""
    out = promtool("test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    alerts = {
        r["alert"] for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    assert tested == alerts


def test_the_rule_unit_tests_can_fail(tmp_path):
    """The same tests against a drift rule with a threshold nobody reaches: promtool must report the miss."""
    rules = (MONITORING / "alerts.yml").read_text().replace("(classifier_drift_psi) > 0.25", "(classifier_drift_psi) > 25")
    (tmp_path / "alerts.yml").write_text(rules)
    shutil.copy(MONITORING / "alerts_test.yml", tmp_path / "alerts_test.yml")
    out = subprocess.run(
        [shutil.which("promtool") or "promtool", "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode != 0 and "ClassifierInputDrift" in out.stdout + out.stderr


@pytest.mark.parametrize("config, flags", [("prometheus.yml", []), ("prometheus-compose.yml", ["--syntax-only"])])
def test_prometheus_configs_pass_promtool(config, flags):
    out = promtool("check", "config", *flags, config)
    assert out.returncode == 0, out.stdout + out.stderr


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana" / "classifier-dashboard.json").read_text())


def test_dashboard_has_the_panels_an_owner_needs():
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for topic in ("throughput", "latency", "error", "confidence", "class mix", "drift"):
        assert topic in titles, f"no panel about {topic}: {titles}"
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)


def test_compose_wires_server_prometheus_and_grafana_together():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"classifier", "prometheus", "grafana"}
    # Every published port listens on loopback only.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # Every mounted file or folder exists, and every named volume is declared.
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{source} is mounted but missing"
            else:
                assert source in compose["volumes"], f"volume {source} is not declared"
    # Prometheus reads the rules where its compose config says, and scrapes the classifier's metrics port.
    prom_mounts = dict(v.split(":")[:2][::-1] for v in services["prometheus"]["volumes"])
    prom_config = yaml.safe_load((REPO / prom_mounts["/etc/prometheus/prometheus.yml"].removeprefix("./")).read_text())
    assert all(rule in prom_mounts for rule in prom_config["rule_files"])
    [target] = prom_config["scrape_configs"][0]["static_configs"][0]["targets"]
    metrics_port = services["classifier"]["environment"]["TS_METRICS_ADDRESS"].rsplit(":", 1)[1]
    assert target == f"classifier:{metrics_port}"
    assert services["classifier"]["build"]["target"] in (REPO / "Dockerfile").read_text()
    # Grafana's provisioned data source is the one the dashboard names, and the dashboard is where the provider looks.
    provisioning = MONITORING / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert {p["datasource"]["uid"] for p in dashboard()["panels"]} == {source["uid"]}
    [provider] = yaml.safe_load((provisioning / "dashboards" / "classifier.yml").read_text())["providers"]
    grafana_mounts = [v.split(":")[1] for v in services["grafana"]["volumes"]]
    assert any(m.startswith(provider["options"]["path"] + "/") and m.endswith(".json") for m in grafana_mounts)
