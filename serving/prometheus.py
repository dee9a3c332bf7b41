"""A private Prometheus (Debian's binary) on a free loopback port, scraping given targets with our alert rules.

Used by the live monitoring test and monitoring.drift_demo; `make monitor` runs the same binary against `make serve`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import requests
import yaml

from serving.launcher import REPO, free_port

INSTALL = "make install-monitoring (apt-get install -y prometheus: Debian's package ships prometheus and promtool)"
RULES = REPO / "monitoring" / "alerts.yml"


class PrometheusProcess:
    def __init__(self, targets: list[str], workdir: Path, scrape_interval: str = "1s"):
        self.workdir = workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "torchserve", "static_configs": [{"targets": targets}]}],
        }
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> PrometheusProcess:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(f"prometheus is not installed; install it with: {INSTALL}")
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config))
        log_path = self.workdir / "prometheus.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",  # loopback only
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")

    def query(self, promql: str) -> list[dict]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        if answer["status"] != "success":
            raise RuntimeError(f"query {promql!r} failed: {answer}")
        return answer["data"]["result"]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict]:
        params = {"query": promql, "start": start, "end": end, "step": step}
        answer = requests.get(f"{self.url}/api/v1/query_range", params=params, timeout=30).json()
        if answer["status"] != "success":
            raise RuntimeError(f"query {promql!r} failed: {answer}")
        return answer["data"]["result"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
