"""The container's own entrypoint (docker/entrypoint.py), run outside Docker on free loopback ports.

It renders docker/config.properties with the same TS_* / MODEL_STORE overrides a user would pass
to `docker run -e`, starts the real TorchServe, and must stop it and everything it started on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from serving.launcher import free_port, wait_ready
from tests.conftest import REPO
from tests.integration.test_http import check_contract

pytestmark = [pytest.mark.server, pytest.mark.slow]

ENTRYPOINT = [sys.executable, str(REPO / "docker" / "entrypoint.py")]
STOP_BOUND_S = 30


def container_env(store: Path, root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TS_CONFIG": str(REPO / "docker" / "config.properties"),
        "MODEL_STORE": str(store),
        "TS_WORKDIR": str(root / "work"),
        "LOG_LOCATION": str(root / "logs"),
        # Loopback, not the image's 0.0.0.0: this machine is shared.
        "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{free_port()}",
        "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{free_port()}",
        "TS_METRICS_ADDRESS": f"http://127.0.0.1:{free_port()}",
        # The image holds the metrics config at /home/model-server; here it is the repository's.
        "TS_METRICS_CONFIG": str(REPO / "monitoring" / "ts-metrics.yaml"),
        "TS_GRPC_INFERENCE_ADDRESS": "127.0.0.1",
        "TS_GRPC_INFERENCE_PORT": str(free_port()),
        "TS_GRPC_MANAGEMENT_PORT": str(free_port()),
    }


def check(env: dict[str, str], name: str) -> int:
    """`entrypoint.py ready | live | healthcheck`: the image's HEALTHCHECK and the Kubernetes probes."""
    return subprocess.run([*ENTRYPOINT, name], env=env, capture_output=True, timeout=30).returncode


def wait_for_readiness(env: dict[str, str], alive, timeout: float = 240) -> list[tuple[int, int]]:
    """Poll (live, ready) until ready passes; the sequence of verdicts seen."""
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        seen.append((check(env, "live"), check(env, "ready")))
        if seen[-1][1] == 0:
            return seen
    raise AssertionError(f"ready never passed: {seen[-5:]}")


def scale(env: dict[str, str], workers: int) -> None:
    resp = requests.put(
        f"{env['TS_MANAGEMENT_ADDRESS']}/models/classifier",
        params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text


def test_entrypoint_serves_then_stops_cleanly_on_sigterm(model_store, tmp_path):
    env = container_env(model_store, tmp_path)
    with open(tmp_path / "entrypoint.out", "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(ENTRYPOINT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        assert check(env, "healthcheck") == 1  # not up yet: the image's HEALTHCHECK must fail
        seen = wait_for_readiness(env, alive=lambda: proc.poll() is None)
        # While the worker loads, ping is already healthy and readiness still fails: that gap is why the
        # HEALTHCHECK and the readiness probe ask for a READY worker instead of /ping.
        assert (0, 1) in seen, f"readiness never failed while live passed: {seen}"
        wait_ready(env["TS_MANAGEMENT_ADDRESS"], "classifier", 10, log_dir=tmp_path / "logs")
        rendered = (tmp_path / "work" / "config.properties").read_text()
        assert f"model_store={model_store.resolve()}" in rendered and "enable_model_api=false" in rendered
        assert check(env, "healthcheck") == 0 and check(env, "live") == 0
        # load_models=all: every registered model must have a READY worker (no rendered config in that work dir).
        every_model = {**env, "TS_WORKDIR": str(tmp_path / "elsewhere"), "TS_LOAD_MODELS": "all"}
        assert check(every_model, "ready") == 0

        # No worker (scaled to 0): the frontend still answers ping, but nothing can answer a prediction.
        scale(env, 0)
        assert (check(env, "live"), check(env, "ready"), check(env, "healthcheck"), check(every_model, "ready")) == (0, 1, 1, 1)
        scale(env, 1)
        assert wait_for_readiness(env, alive=lambda: proc.poll() is None)[-1] == (0, 0)

        resp = requests.post(
            f"{env['TS_INFERENCE_ADDRESS']}/predictions/classifier",
            data=(REPO / "docs" / "sample.png").read_bytes(),
            headers={"X-Seed": "1"},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        check_contract(resp.json())

        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any("java" in " ".join(p.cmdline()) for p in tree), "no Java frontend under the entrypoint"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=STOP_BOUND_S)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:  # only on a failed assertion above: leave nothing behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = (tmp_path / "entrypoint.out").read_text(errors="replace")
    assert status == 0, f"exit status {status}\n{log[-3000:]}"
    assert took < STOP_BOUND_S
    gone, alive = psutil.wait_procs(tree, timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], f"left behind: {alive}"
    assert check(env, "ready") == 1 and check(env, "live") == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{env['TS_INFERENCE_ADDRESS']}/ping", timeout=5)


def test_entrypoint_rejects_an_unknown_command(tmp_path):
    out = subprocess.run(
        [*ENTRYPOINT, "readyz"], env=container_env(tmp_path, tmp_path), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 64 and "ready | healthcheck | live" in out.stderr


def test_entrypoint_without_archive_says_how_to_get_one(tmp_path):
    empty = tmp_path / "store"
    empty.mkdir()
    out = subprocess.run(ENTRYPOINT, env=container_env(empty, tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "classifier.mar not found" in out.stderr and "make archive" in out.stderr and "model-store" in out.stderr
