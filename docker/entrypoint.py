#!/usr/bin/env python3
"""Container entrypoint: run TorchServe behind its draining proxy, and drain, then stop, on SIGTERM / SIGINT.

    python entrypoint.py               serve until SIGTERM or SIGINT (`docker stop`, Ctrl-C), then drain and stop
    python entrypoint.py ready         exit 0 when every model of load_models (`all`: every registered one) has a
                                       READY worker, asked of the management API on loopback, and no stop has begun:
                                       fails while the model loads and from the first moment of a drain (the
                                       HEALTHCHECK, a readiness probe); `healthcheck` is the same command
    python entrypoint.py live          exit 0 when GET /ping answers 200 through the proxy: the frontend is up,
                                       maybe not the model (a liveness probe; ping is healthy before the first answer)
    python entrypoint.py drain         readiness false, then wait until no request has arrived for DRAIN_QUIET
                                       seconds (Kubernetes' preStop hook); the SIGTERM that follows then only stops

HAProxy holds the inference addresses (HTTP and gRPC) and TorchServe listens on private loopback ports behind it,
because TorchServe's own stop resets every open connection (serving/drain.py). On SIGTERM: readiness turns false,
requests are answered until none has arrived for DRAIN_QUIET seconds (at most STOP_TIMEOUT minus 6 s), the proxy
stops listening (a new connection is refused), answers what it accepted and exits; then TorchServe stops.

Every path and port can be overridden from the environment, so the same start-up runs
in the image and in the tests (outside Docker, on free ports):

    TS_CONFIG        base config.properties       (/home/model-server/config.properties)
    MODEL_STORE      folder holding classifier.mar (/home/model-server/model-store)
    TS_WORKDIR       rendered config and TorchServe's TMPDIR (its pid file, unpacked models)  (/tmp/torchserve)
    LOG_LOCATION     TorchServe's log folder       (/home/model-server/logs)
    STOP_TIMEOUT     seconds a stop may take, drain included, before the rest is killed (8; `docker stop` waits 10)
    DRAIN_QUIET      seconds without a request that end the drain (1)
    TS_INFERENCE_ADDRESS, TS_MANAGEMENT_ADDRESS, TS_METRICS_ADDRESS, TS_METRICS_CONFIG, TS_GRPC_INFERENCE_ADDRESS,
    TS_GRPC_INFERENCE_PORT, TS_GRPC_MANAGEMENT_ADDRESS, TS_GRPC_MANAGEMENT_PORT, TS_LOAD_MODELS
                     replace the config key of the same name (lower case, without TS_)

Exit status: 0 after a requested stop that finished within STOP_TIMEOUT, 1 when something had
to be killed or the proxy died, 2 when the model archive or haproxy is missing, otherwise TorchServe's own status.

Why not `exec torchserve --start --foreground`: that command is a Python wrapper which starts
the Java frontend as its child and does not pass SIGTERM on, so the frontend and its workers
would outlive it. Here SIGTERM goes to the frontend itself (the pid TorchServe writes to
TMPDIR/.model_server.pid), which is what `torchserve --stop` does: the frontend stops its
workers and exits, then the wrapper returns. Stdlib only, like serving/launcher.py and serving/drain.py, which
the image holds beside it (Dockerfile, stage `app`) and from which it takes the config parsing, the worker states
and the proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# The image copies serving/ next to this file; in the repository it is one folder up.
if not (Path(__file__).resolve().parent / "serving").is_dir():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from serving.drain import Proxy, drain, haproxy_bin, quiet_budget
from serving.launcher import (
    group_alive,
    inference_url,
    management_url,
    model_workers,
    read_properties,
    torchserve_bin,
    write_properties,
)

HOME = Path("/home/model-server")
OVERRIDABLE = (
    "inference_address",
    "management_address",
    "metrics_address",
    "metrics_config",
    "grpc_inference_address",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_port",
    "load_models",
)


def workdir(env: dict[str, str]) -> Path:
    return Path(env.get("TS_WORKDIR", "/tmp/torchserve"))


def proxy(env: dict[str, str]) -> Proxy:
    return Proxy(workdir(env) / "proxy")


def stop_timeout(env: dict[str, str]) -> float:
    return float(env.get("STOP_TIMEOUT", "8"))


def drain_quiet(env: dict[str, str]) -> float:
    return float(env.get("DRAIN_QUIET", "1"))


def render_config(env: dict[str, str]) -> dict[str, str]:
    """The base config with the environment's overrides; model_store and allowed_urls follow MODEL_STORE."""
    props = read_properties(Path(env.get("TS_CONFIG", HOME / "config.properties")))
    props.update({key: env[f"TS_{key.upper()}"] for key in OVERRIDABLE if env.get(f"TS_{key.upper()}")})
    store = Path(env.get("MODEL_STORE", props.get("model_store", HOME / "model-store"))).resolve()
    props["model_store"] = str(store)
    props["allowed_urls"] = f"^file://{re.escape(str(store))}/.*$"
    return props


def missing_archives(props: dict[str, str]) -> list[Path]:
    store = Path(props["model_store"])
    names = [item.split("=", 1)[-1] for item in props.get("load_models", "").split(",") if item and item != "all"]
    return [store / name for name in names if not (store / name).exists()]


def serve(env: dict[str, str]) -> int:
    props = render_config(env)
    missing = missing_archives(props)
    if missing:
        print(
            f"error: {', '.join(map(str, missing))} not found. Build it with `make archive` before `docker build`, "
            f"or mount a folder holding it: -v $PWD/model_store:{HOME / 'model-store'}",
            file=sys.stderr,
        )
        return 2
    try:
        haproxy_bin()
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = workdir(env)
    tmp, logs = work / "tmp", Path(env.get("LOG_LOCATION", HOME / "logs"))
    tmp.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    # config.properties: the addresses clients and probes use (the proxy's); torchserve.properties: what TorchServe
    # reads, its inference listeners on private loopback ports behind the proxy.
    write_properties(work / "config.properties", props)
    front = proxy(env)
    config = work / "torchserve.properties"
    write_properties(config, front.configure(props, stop_timeout(env), drain_quiet(env)))
    pid_file = tmp / ".model_server.pid"
    pid_file.unlink(missing_ok=True)  # a stale one from an earlier run would make TorchServe refuse to start

    stop_requested: list[float] = []

    def request_stop(signum, _frame) -> None:
        if not stop_requested:
            stop_requested.append(time.monotonic())

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # TorchServe reads TS_* variables itself where the config allows it (enable_envvars_config, the KServe config):
    # the overrides are in the rendered config already, and TS_INFERENCE_ADDRESS would take the proxy's port.
    rendered = {f"TS_{key.upper()}" for key in OVERRIDABLE}
    child_env = {k: v for k, v in env.items() if k not in rendered}
    child_env.update(TMPDIR=str(tmp), LOG_LOCATION=str(logs), METRICS_LOCATION=str(logs))
    # Its own process group, so that whatever is left at the end can be killed at once.
    proc = subprocess.Popen(
        [torchserve_bin(), "--start", "--foreground", "--ncs", "--ts-config", str(config), "--model-store", props["model_store"]],
        env=child_env,
        start_new_session=True,
    )
    failed = False
    try:
        front.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed = True
    while not failed and not stop_requested and proc.poll() is None and front.alive():
        time.sleep(0.1)
    if not stop_requested and proc.poll() is not None:  # TorchServe ended on its own: take the proxy down with it
        front.soft_stop(time.monotonic() + 2)
        return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    if not stop_requested:
        print("error: the proxy in front of TorchServe is not running; stopping TorchServe", file=sys.stderr)
        failed = True
    started = stop_requested[0] if stop_requested else time.monotonic()
    print(drain(front, stop_timeout(env), drain_quiet(env), started), file=sys.stderr, flush=True)
    try:  # the Java frontend stops its workers; fall back to the whole group before it has started
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = started + stop_timeout(env)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print("warning: TorchServe did not stop within STOP_TIMEOUT; killed what was left", file=sys.stderr)
        return 1
    return 1 if failed else 0


def drain_hook(env: dict[str, str]) -> int:
    """`entrypoint.py drain` (Kubernetes' preStop): readiness false, then serve on until quiet, within the budget
    STOP_TIMEOUT leaves a drain. The SIGTERM that follows finds the drain done and only stops."""
    front = proxy(env)
    if not front.alive():
        print("drain: no proxy is running here", file=sys.stderr)
        return 0
    started = time.monotonic()
    front.mark("draining")
    quiet, served = front.wait_quiet(drain_quiet(env), started + quiet_budget(stop_timeout(env)))
    front.mark("drained")
    waited = time.monotonic() - started
    print(f"drain: {'quiet' if quiet else 'not quiet'} after {waited:.1f} s ({served} requests served meanwhile)")
    return 0


def served_props(env: dict[str, str]) -> dict[str, str]:
    """The config the running server uses (rendered at start), else what it would render now."""
    rendered = workdir(env) / "config.properties"
    return read_properties(rendered) if rendered.exists() else render_config(env)


def model_names(props: dict[str, str]) -> list[str]:
    """The models load_models registers at start-up: `name=file.mar` gives name, `file.mar` gives file."""
    items = [item.strip() for item in props.get("load_models", "").split(",") if item.strip() and item.strip() != "all"]
    return [item.split("=", 1)[0] if "=" in item else item.removesuffix(".mar") for item in items]


def registered_models(mgmt: str) -> list[str]:
    """Every model the server has registered (for load_models=all); [] while it does not answer."""
    try:
        with urllib.request.urlopen(f"{mgmt}/models", timeout=5) as resp:
            return [model["modelName"] for model in json.loads(resp.read()).get("models", [])]
    except (OSError, ValueError, KeyError):
        return []


def ready(env: dict[str, str]) -> int:
    """Exit 0 only when every model of load_models has a READY worker (ping alone is healthy too early) and no
    stop has begun (a drain turns readiness false at once)."""
    if proxy(env).draining():
        print("not ready: draining (a stop has begun)", file=sys.stderr)
        return 1
    props = served_props(env)
    mgmt = management_url(props)
    names = model_names(props) or registered_models(mgmt)
    if not names:
        print(f"not ready: no model registered yet at {mgmt}", file=sys.stderr)
        return 1
    for name in names:
        states = [w.get("status") for w in model_workers(mgmt, name)]
        if "READY" not in states:
            print(f"not ready: {name} workers {states or 'not registered yet'} at {mgmt}", file=sys.stderr)
            return 1
    return 0


def live(env: dict[str, str]) -> int:
    """GET /ping on the inference address, through the proxy: both answer (the model may still be loading)."""
    url = inference_url(served_props(env))
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:  # URLError, HTTPError (500 Unhealthy), refused, timeout
        print(f"not live: {url}/ping: {exc}", file=sys.stderr)
        return 1


CHECKS = {"ready": ready, "healthcheck": ready, "live": live, "drain": drain_hook}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] in CHECKS:
        return CHECKS[argv[1]](dict(os.environ))
    if argv[1:]:
        print(f"usage: {argv[0]} [{' | '.join(CHECKS)}]", file=sys.stderr)
        return 64
    return serve(dict(os.environ))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
