"""Stopping without losing a request: 8 bounded clients on loopback, then a stop in the middle of the load.

For `make stop` (serving/launcher.py) and for the container's entrypoint run outside a container (its SIGTERM, and
Kubernetes' preStop hook followed by SIGTERM), each a private server on free loopback ports: every request the
server accepted is answered (no reset, no 5xx, over HTTP and gRPC), requests go on being answered after readiness
has turned false, and a connection attempted after the stop is refused. `make image-check` runs the same load
against the real container (docker/image_check.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from loadtests.stop_load import StopLoad
from serving.launcher import read_properties, write_properties
from tests.conftest import REPO
from tests.integration.conftest import server_overrides
from tests.integration.test_container_entrypoint import ENTRYPOINT, check, container_env, wait_for_readiness

pytestmark = [pytest.mark.server, pytest.mark.slow]

LAUNCHER = [sys.executable, "-m", "serving.launcher"]
IMAGE = (REPO / "docs" / "sample.png").read_bytes()
# A stop is bounded by STOP_TIMEOUT (8 s by default): the whole test gets a few times that.
STOP_BOUND_S = 30


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def readiness_while(proc: subprocess.Popen, is_ready) -> list[tuple[float, bool]]:
    """Poll ``is_ready`` until ``proc`` (the stop) ends: (seconds since the stop began, ready) pairs."""
    started, seen = time.monotonic(), []
    while proc.poll() is None and time.monotonic() - started < STOP_BOUND_S:
        seen.append((time.monotonic() - started, is_ready()))
    return seen


def assert_drained(load: StopLoad, stop_began: float, readiness: list[tuple[float, bool]], ports: list[int]) -> None:
    load.stop(wait=15)  # the clients end at their first refused connection
    failures = load.failures()
    assert not failures, f"{len(failures)} accepted requests not answered: {failures[:5]} (all: {load.summary()})"
    not_ready = [t for t, ready in readiness if not ready]
    assert not_ready and not_ready[0] < 3, f"readiness still true during the drain: {readiness[:10]}"
    turned = stop_began + not_ready[0]
    assert load.summary(since=turned).get("answered", 0) > 0, "nothing was answered once readiness had turned false"
    assert load.summary().get("refused", 0) == len(load.clients()), f"every client ends refused: {load.summary()}"
    for port in ports:
        assert refused(port), f"port {port} still accepts connections after the stop"


def test_make_stop_drains_under_load(model_store, tmp_path):
    """`make serve` then `make stop` with 8 clients in flight (`serving.launcher`, as make runs it)."""
    config = tmp_path / "config.properties"
    write_properties(config, {**read_properties(REPO / "config.properties"), **server_overrides(model_store)})
    props = read_properties(config)
    env = {**os.environ, "TMPDIR": str(tmp_path), "LOG_LOCATION": str(tmp_path / "logs")}
    started = subprocess.run([*LAUNCHER, "start", "--config", str(config)], cwd=REPO, env=env, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        http, grpc_port = port_of(props["inference_address"]), int(props["grpc_inference_port"])
        with StopLoad(("127.0.0.1", http), ("127.0.0.1", grpc_port), IMAGE, seconds=120) as load:
            load.wait_answers(3)
            stop_began = time.monotonic()
            stop = subprocess.Popen([*LAUNCHER, "stop"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
            ready = [*LAUNCHER, "ready", "--config", str(config)]
            readiness = readiness_while(stop, lambda: subprocess.run(ready, cwd=REPO, env=env).returncode == 0)
            out, _ = stop.communicate(timeout=STOP_BOUND_S)
            assert stop.returncode == 0 and "drain:" in out, out
            assert_drained(load, stop_began, readiness, [http, grpc_port])
    finally:
        subprocess.run([*LAUNCHER, "stop", "--stop-timeout", "0"], cwd=REPO, env=env, capture_output=True, timeout=120)


@pytest.mark.parametrize("how", ["sigterm", "prestop"])
def test_entrypoint_drains_under_load(model_store, tmp_path, how):
    """`docker stop` (SIGTERM), and Kubernetes' preStop hook (`entrypoint.py drain`) then SIGTERM."""
    env = container_env(model_store, tmp_path)
    with open(tmp_path / "entrypoint.out", "wb") as out:
        proc = subprocess.Popen(ENTRYPOINT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_readiness(env, alive=lambda: proc.poll() is None)
        http, grpc_port = port_of(env["TS_INFERENCE_ADDRESS"]), int(env["TS_GRPC_INFERENCE_PORT"])
        with StopLoad(("127.0.0.1", http), ("127.0.0.1", grpc_port), IMAGE, seconds=120) as load:
            load.wait_answers(3)
            stop_began = time.monotonic()
            if how == "prestop":
                hook = subprocess.Popen([*ENTRYPOINT, "drain"], env=env, stdout=subprocess.PIPE, text=True)
                readiness = readiness_while(hook, lambda: check(env, "ready") == 0)
                said, _ = hook.communicate(timeout=STOP_BOUND_S)
                # The clients keep their connections (as through a Service): not quiet, the budget ends the hook.
                assert hook.returncode == 0 and "drain: not quiet" in said, said
                assert load.summary(since=time.monotonic() - 0.5).get("answered", 0) > 0, "it stopped serving early"
            proc.send_signal(signal.SIGTERM)
            readiness = readiness if how == "prestop" else readiness_while(proc, lambda: check(env, "ready") == 0)
            status = proc.wait(timeout=STOP_BOUND_S)
            log = (tmp_path / "entrypoint.out").read_text(errors="replace")
            assert status == 0, f"exit status {status}\n{log[-3000:]}"
            assert ("drain: proxy closed" in log) == (how == "prestop"), log[-2000:]  # the hook's wait is not repeated
            assert_drained(load, stop_began, readiness, [http, grpc_port])
    finally:
        if proc.poll() is None:  # only on a failed assertion above: leave nothing behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
