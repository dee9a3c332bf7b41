#!/usr/bin/env python3
"""Container entrypoint: run TorchServe in the foreground and stop it gracefully on SIGTERM / SIGINT.

    python entrypoint.py               serve until SIGTERM or SIGINT (`docker stop`, Ctrl-C)
    python entrypoint.py healthcheck   exit 0 when GET /ping answers 200 (the image's HEALTHCHECK)

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
workers and exits, then the wrapper returns. Stdlib only, so the image needs nothing else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def read_properties(path: Path) -> dict[str, str]:
    # Same parser as serving.launcher.read_properties: the image holds this file alone, without the serving package.
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


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


def torchserve_bin() -> str:
    local = Path(sys.executable).parent / "torchserve"
    return str(local) if local.exists() else (shutil.which("torchserve") or "torchserve")


def missing_archives(props: dict[str, str]) -> list[Path]:
    store = Path(props["model_store"])
    names = [item.split("=", 1)[-1] for item in props.get("load_models", "").split(",") if item and item != "all"]
    return [store / name for name in names if not (store / name).exists()]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


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


def healthcheck(env: dict[str, str]) -> int:
    """GET /ping on the inference address of the rendered config (the image's, when not started yet)."""
    rendered = workdir(env) / "config.properties"
    props = read_properties(rendered) if rendered.exists() else render_config(env)
    url = props.get("inference_address", "http://127.0.0.1:8080").replace("0.0.0.0", "127.0.0.1")
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:  # URLError, HTTPError (500 Unhealthy), refused, timeout
        print(f"unhealthy: {url}/ping: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    if argv[1:] == ["healthcheck"]:
        return healthcheck(dict(os.environ))
    if argv[1:]:
        print(f"usage: {argv[0]} [healthcheck]", file=sys.stderr)
        return 64
    return serve(dict(os.environ))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
