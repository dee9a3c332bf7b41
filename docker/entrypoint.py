#!/usr/bin/env python3
"""Container entrypoint: run TorchServe in the foreground and stop it gracefully on SIGTERM / SIGINT.

    python entrypoint.py               serve until SIGTERM or SIGINT (`docker stop`, Ctrl-C)
    python entrypoint.py ready         exit 0 when every model of load_models (`all`: every registered one) has a
                                       READY worker, asked of the management API on loopback: fails while the model
                                       loads (the HEALTHCHECK, a readiness probe); `healthcheck` is the same command
    python entrypoint.py live          exit 0 when GET /ping answers 200: the frontend is up, maybe not the model
                                       (a liveness probe; ping is healthy seconds before the first answer)

Every path and port can be overridden from the environment, so the same start-up runs
in the image and in the tests (outside Docker, on free ports):

    TS_CONFIG        base config.properties       (/home/model-server/config.properties)
    MODEL_STORE      folder holding classifier.mar (/home/model-server/model-store)
    TS_WORKDIR       rendered config and TorchServe's TMPDIR (its pid file, unpacked models)  (/tmp/torchserve)
    LOG_LOCATION     TorchServe's log folder       (/home/model-server/logs)
    STOP_TIMEOUT     seconds a graceful stop may take before the rest is killed (8; `docker stop` waits 10)
    TS_INFERENCE_ADDRESS, TS_MANAGEMENT_ADDRESS, TS_METRICS_ADDRESS, TS_METRICS_CONFIG, TS_GRPC_INFERENCE_ADDRESS,
    TS_GRPC_INFERENCE_PORT, TS_GRPC_MANAGEMENT_ADDRESS, TS_GRPC_MANAGEMENT_PORT, TS_LOAD_MODELS
                     replace the config key of the same name (lower case, without TS_)

Exit status: 0 after a requested stop that finished within STOP_TIMEOUT, 1 when something had
to be killed, 2 when the model archive is missing, otherwise TorchServe's own status.

Why not `exec torchserve --start --foreground`: that command is a Python wrapper which starts
the Java frontend as its child and does not pass SIGTERM on, so the frontend and its workers
would outlive it. Here SIGTERM goes to the frontend itself (the pid TorchServe writes to
TMPDIR/.model_server.pid), which is what `torchserve --stop` does: the frontend stops its
workers and exits, then the wrapper returns. Stdlib only, like serving/launcher.py, which the image
holds beside it (Dockerfile, stage `app`) and from which it takes the config parsing and the worker states.
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
from serving.launcher import group_alive, inference_url, management_url, model_workers, read_properties, torchserve_bin

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
    work = workdir(env)
    tmp, logs = work / "tmp", Path(env.get("LOG_LOCATION", HOME / "logs"))
    tmp.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    config = work / "config.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    pid_file = tmp / ".model_server.pid"
    pid_file.unlink(missing_ok=True)  # a stale one from an earlier run would make TorchServe refuse to start

    stop_requested = False
    proc: subprocess.Popen | None = None

    def request_stop(signum, _frame) -> None:
        nonlocal stop_requested
        stop_requested = True
        if proc is None:
            return
        try:  # the Java frontend stops its workers; fall back to the whole group before it has started
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    child_env = {**env, "TMPDIR": str(tmp), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs)}
    # Its own process group, so that whatever is left at the end can be killed at once.
    proc = subprocess.Popen(
        [torchserve_bin(), "--start", "--foreground", "--ncs", "--ts-config", str(config), "--model-store", props["model_store"]],
        env=child_env,
        start_new_session=True,
    )
    if stop_requested:  # a signal that arrived while the process was being created
        request_stop(signal.SIGTERM, None)
    status = proc.wait()
    if not stop_requested:
        return status if status >= 0 else 128 - status
    deadline = time.monotonic() + float(env.get("STOP_TIMEOUT", "8"))
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        print("warning: TorchServe did not stop within STOP_TIMEOUT; killed what was left", file=sys.stderr)
        return 1
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
    """Exit 0 only when every model of load_models has a READY worker (ping alone is healthy too early)."""
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
    """GET /ping on the inference address: the frontend answers (the model may still be loading)."""
    url = inference_url(served_props(env))
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:  # URLError, HTTPError (500 Unhealthy), refused, timeout
        print(f"not live: {url}/ping: {exc}", file=sys.stderr)
        return 1


CHECKS = {"ready": ready, "healthcheck": ready, "live": live}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] in CHECKS:
        return CHECKS[argv[1]](dict(os.environ))
    if argv[1:]:
        print(f"usage: {argv[0]} [{' | '.join(CHECKS)}]", file=sys.stderr)
        return 64
    return serve(dict(os.environ))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
