"""Start TorchServe behind its draining proxy, wait until a model is READY, and stop it without losing a request.

    python -m serving.launcher start [--config config.properties] [--model classifier]
    python -m serving.launcher ready [--config config.properties] [--model classifier]
    python -m serving.launcher stop [--stop-timeout 8] [--quiet 1]

`start` runs HAProxy on the config's inference addresses (HTTP and gRPC) and TorchServe on private loopback ports
behind it (serving/drain.py says why), and returns once every worker of the model reports READY, or fails with the
tail of TorchServe's logs. `ready` exits 0 while the model has a READY worker and no stop has begun. `stop` drains:
readiness turns false, requests go on being answered until none has arrived for ``--quiet`` seconds (within
``--stop-timeout``), then the proxy stops listening, answers what it accepted and exits, and only then TorchServe
stops. The same functions start the throw-away servers of the tests (``TorchServeProcess``), which run in their own
process group, with their own TMPDIR (TorchServe keeps its pid file there, the proxy its run folder) and their own
log folder.

Stdlib only: the images copy this file alone for docker/entrypoint.py, which imports its helpers
(tests/tools/test_container_files.py checks the imports).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from serving.drain import Proxy, drain, haproxy_bin

REPO = Path(__file__).resolve().parent.parent
# A stop's bound, and the quiet period a drain waits for (the entrypoint reads the same variables).
STOP_TIMEOUT_S = float(os.environ.get("STOP_TIMEOUT", "8"))
DRAIN_QUIET_S = float(os.environ.get("DRAIN_QUIET", "1"))


def torchserve_bin() -> str:
    local = Path(sys.executable).parent / "torchserve"
    return str(local) if local.exists() else (shutil.which("torchserve") or "torchserve")


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def write_properties(path: Path, props: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def management_url(props: dict[str, str]) -> str:
    return props.get("management_address", "http://127.0.0.1:8081").replace("0.0.0.0", "127.0.0.1")


def inference_url(props: dict[str, str]) -> str:
    return props.get("inference_address", "http://127.0.0.1:8080").replace("0.0.0.0", "127.0.0.1")


def model_workers(mgmt_url: str, model: str) -> list[dict]:
    """Workers of ``model`` as the management API describes them; [] while it is not registered."""
    try:
        with urllib.request.urlopen(f"{mgmt_url}/models/{model}", timeout=5) as resp:
            described = json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return []
    return described[0].get("workers", []) if described else []


WORKER_DIED = "Backend worker process died"


def log_size(log_dir: Path | None) -> int:
    path = log_dir / "model_log.log" if log_dir else None
    return path.stat().st_size if path and path.exists() else 0


def worker_deaths(log_dir: Path | None, since: int) -> int:
    """How often a worker died since byte ``since`` of model_log.log (TorchServe retries forever)."""
    path = log_dir / "model_log.log" if log_dir else None
    if not path or not path.exists():
        return 0
    with path.open("rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace").count(WORKER_DIED)


def wait_ready(
    mgmt_url: str, model: str, timeout: float, alive=lambda: True, log_dir: Path | None = None, log_offset: int = 0
) -> list[dict]:
    """Poll until every worker of ``model`` is READY.

    Raises RuntimeError with the log tail when the server exits, when workers
    keep dying while loading (a broken handler would otherwise be retried with
    back-off until the timeout), or at the timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = model_workers(mgmt_url, model)
        if workers and all(w.get("status") == "READY" for w in workers):
            return workers
        if not alive():
            raise RuntimeError(f"TorchServe exited before {model} was READY.\n{log_tail(log_dir)}")
        if worker_deaths(log_dir, log_offset) >= 2:
            raise RuntimeError(f"the {model} worker died twice while loading.\n{log_tail(log_dir, 60)}")
        time.sleep(0.25)
    raise RuntimeError(
        f"{model} not READY after {timeout:.0f} s (workers: {model_workers(mgmt_url, model)}).\n{log_tail(log_dir)}"
    )


def log_tail(log_dir: Path | None, lines: int = 40) -> str:
    if log_dir is None:
        return ""
    parts = []
    for name in ("ts_log.log", "model_log.log"):
        path = log_dir / name
        if path.exists():
            parts.append(f"--- {path} (last {lines} lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_overrides(store: Path, load_models: str = "classifier=classifier.mar") -> dict[str, str]:
    """config.properties overrides for a private server: every listener on a free loopback port, so the tests,
    the benchmarks and the soak never collide with `make serve` or with each other."""
    return {
        "inference_address": f"http://127.0.0.1:{free_port()}",
        "management_address": f"http://127.0.0.1:{free_port()}",
        "metrics_address": f"http://127.0.0.1:{free_port()}",
        "grpc_inference_port": str(free_port()),
        "grpc_management_port": str(free_port()),
        "model_store": str(Path(store).resolve()),
        "load_models": load_models,
    }


class TorchServeProcess:
    """A foreground TorchServe in its own process group: for the tests, the benchmarks and the soak.

    (The container's entrypoint, docker/entrypoint.py, runs its own with the helpers of this module.)

    ``overrides`` replace keys of the base config.properties (ports, model_store, ...). With ``proxy``, HAProxy
    takes the inference addresses (``props`` and ``inference_url`` stay the public ones) and ``stop`` drains first.
    """

    def __init__(
        self, base_config: Path, workdir: Path, overrides: dict[str, str], model: str = "classifier", proxy: bool = False
    ):
        self.workdir, self.model = workdir.resolve(), model  # TorchServe runs inside it: paths must not be relative
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.props = {**read_properties(base_config), **overrides}
        metrics_config = self.props.get("metrics_config")
        if metrics_config and not Path(metrics_config).is_absolute():  # TorchServe runs in workdir, not beside the config
            self.props["metrics_config"] = str((Path(base_config).parent / metrics_config).resolve())
        self.config_path = self.workdir / "config.properties"
        self.proxy = Proxy(self.workdir / "proxy") if proxy else None
        served = self.proxy.configure(self.props, STOP_TIMEOUT_S, DRAIN_QUIET_S) if self.proxy else self.props
        write_properties(self.config_path, served)
        self.log_dir = self.workdir / "logs"
        self.proc: subprocess.Popen | None = None
        self.drain_report = ""

    @property
    def inference_url(self) -> str:
        return inference_url(self.props)

    @property
    def management_url(self) -> str:
        return management_url(self.props)

    def start(self, timeout: float = 180) -> TorchServeProcess:
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        # TEMP too: the frontend's java.io.tmpdir, where it puts each worker's socket (.ts.sock.<port>, from port 9000) and
        # the unpacked archives. TorchServe takes it from TEMP, not TMPDIR; without it, servers running at once share
        # /tmp/.ts.sock.9000, and a worker starting in one server takes over the socket of another's.
        env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(self.log_dir)}
        env["METRICS_LOCATION"] = str(self.log_dir)
        with open(self.workdir / "stdout.log", "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [torchserve_bin(), "--start", "--foreground", "--ncs", "--ts-config", str(self.config_path)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            if self.proxy:
                self.proxy.start()
            wait_ready(self.management_url, self.model, timeout, alive=lambda: self.proc.poll() is None, log_dir=self.log_dir)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30) -> None:
        """Drain through the proxy if there is one, then SIGTERM the whole process group (frontend and workers),
        SIGKILL what is left after ``timeout``."""
        if self.proxy and self.proxy.alive():
            self.drain_report = drain(self.proxy, STOP_TIMEOUT_S, DRAIN_QUIET_S)
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if not group_alive(self.proc.pid):
                break
            deadline = time.monotonic() + wait
            while group_alive(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not group_alive(self.proc.pid):
                break
        self.proc = None

    def __enter__(self) -> TorchServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def proxy_dir() -> Path:
    """`make serve`'s proxy run folder, beside TorchServe's pid file in TMPDIR."""
    return Path(tempfile.gettempdir()) / "classifier-proxy"


def start(config: Path, model: str, timeout: float) -> None:
    """`make serve`: TorchServe in the background (its own pid file) behind HAProxy, then wait for READY."""
    props = read_properties(config)
    mgmt = management_url(props)
    if model_workers(mgmt, model):
        print(f"TorchServe is already serving {model} at {inference_url(props)} (make stop to stop it)")
        return
    store = REPO / props.get("model_store", "model_store")
    archive = re.sub(r"^.*=", "", props.get("load_models", f"{model}.mar"))
    if not (store / archive).exists():
        raise SystemExit(f"error: {store / archive} does not exist; run `make archive` first")
    try:
        haproxy_bin()
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    log_dir = Path(os.environ.get("LOG_LOCATION", REPO / "logs"))
    offset = log_size(log_dir)
    env = {**os.environ, "LOG_LOCATION": str(log_dir), "METRICS_LOCATION": str(log_dir)}
    log_dir.mkdir(exist_ok=True)
    proxy = Proxy(proxy_dir())
    served = proxy.run_dir / "torchserve.properties"
    write_properties(served, proxy.configure(props, STOP_TIMEOUT_S, DRAIN_QUIET_S))
    # The daemon must not inherit our stdout/stderr: a caller piping `make serve` would wait for it forever.
    with open(log_dir / "torchserve.out", "ab") as out:
        subprocess.run(
            [torchserve_bin(), "--start", "--ncs", "--ts-config", str(served), "--model-store", str(store)],
            cwd=REPO,
            env=env,
            check=True,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        proxy.start(daemon=True)
        workers = wait_ready(mgmt, model, timeout, log_dir=log_dir, log_offset=offset)
    except RuntimeError as exc:
        stop(0, 0)
        raise SystemExit(f"error: {exc}") from None
    print(f"{model} is READY ({len(workers)} worker(s)) at {inference_url(props)}; logs in {log_dir}")


def ready(config: Path, model: str) -> int:
    """Exit 0 while ``model`` has a READY worker and no stop has begun (a load balancer's readiness check)."""
    if Proxy(proxy_dir()).draining():
        print("not ready: draining (a stop has begun)", file=sys.stderr)
        return 1
    states = [w.get("status") for w in model_workers(management_url(read_properties(config)), model)]
    if "READY" not in states:
        print(f"not ready: {model} workers {states or 'not registered'}", file=sys.stderr)
        return 1
    return 0


def stop(stop_timeout: float = STOP_TIMEOUT_S, quiet: float = DRAIN_QUIET_S) -> None:
    """`make stop`: drain through the proxy, then stop TorchServe, which no client reaches any more."""
    proxy = Proxy(proxy_dir())
    if proxy.alive():
        print(drain(proxy, stop_timeout, quiet))
    subprocess.run([torchserve_bin(), "--stop"], cwd=REPO, check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start, check or stop TorchServe for this project.")
    parser.add_argument("action", choices=["start", "ready", "stop"])
    parser.add_argument(
        "--config", type=Path, default=REPO / "config.properties", help="TorchServe config (default: config.properties)"
    )
    parser.add_argument("--model", default="classifier", help="model to wait for (default: classifier)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for READY (default: 300)")
    parser.add_argument(
        "--stop-timeout", type=float, default=STOP_TIMEOUT_S, help="bound of a stop, drain included (default: STOP_TIMEOUT or 8)"
    )
    parser.add_argument(
        "--quiet", type=float, default=DRAIN_QUIET_S, help="seconds without a request that end a drain (default: DRAIN_QUIET, 1)"
    )
    args = parser.parse_args(argv)
    if args.action == "start":
        start(args.config, args.model, args.timeout)
    elif args.action == "ready":
        sys.exit(ready(args.config, args.model))
    else:
        stop(args.stop_timeout, args.quiet)


if __name__ == "__main__":
    main()
