"""Drain on stop: HAProxy holds the public inference ports (HTTP and gRPC), TorchServe listens behind it.

TorchServe 0.12's frontend, on SIGTERM, closes its listeners and then at once every open connection, resetting the
requests in flight and in its queue (pytorch/serve#2008). So the inference addresses of the config belong to HAProxy,
and TorchServe gets private loopback ports. A stop (``drain`` below; the entrypoint's SIGTERM, ``make stop``, the
Kubernetes preStop hook) then goes:

1. **not ready**: a ``draining`` file in the run folder, which every readiness check reads first;
2. **quiet**: keep serving until nothing is in flight and no request has arrived for ``quiet`` seconds (both counted
   by HAProxy's stats socket), or until the quiet budget of STOP_TIMEOUT is spent;
3. **soft stop** (SIGUSR1): HAProxy closes its listeners, so a new connection is refused; it finishes every request it
   accepted, TorchServe's queue included, and answers the next request of each keep-alive connection with
   ``Connection: close`` (HTTP/2: GOAWAY) instead of closing it while idle (``option idle-close-on-response``);
   it exits when the last one is done;
4. only then is TorchServe stopped: no client connection reaches it any more.

Measurements and the command behind each: docs/operations.md ("Stopping without losing a request").
Stdlib only, like serving/launcher.py: the image copies both for docker/entrypoint.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

HAPROXY_INSTALL = "make install-proxy (as root; it runs apt-get install haproxy)"
# What TorchServe's own stop may take once the proxy has gone: 2.6-3.5 s measured (docs/containers.md), no client
# left to hurt. The rest of STOP_TIMEOUT is the drain's.
TORCHSERVE_STOP_S = 4.0
# The least time the accepted requests get to finish after the soft stop, when the quiet wait ran out: a full
# queue (64) answers in about 0.5 s at 130 req/s, in 1.6 s for 12 MP photos (docs/scaling.md).
FINISH_S = 2.0
# Seconds a client is told to wait (Retry-After) before it retries a 503: a full queue drains in under a second,
# and a retry of a request that met a dying worker waits in the queue for the restarted one.
RETRY_AFTER_S = 1
# A worker that dies fails the batch it held with this message (TorchServe's WorkerThread): 500, or 507 when the
# worker was killed (exit 137: SIGKILL, the OOM killer).
WORKER_DIED = "Worker died."


def quiet_budget(stop_timeout: float) -> float:
    """The longest a drain waits for quiet within STOP_TIMEOUT: what finishing and TorchServe's stop leave."""
    return max(0.0, stop_timeout - TORCHSERVE_STOP_S - FINISH_S)


def haproxy_bin() -> str:
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)
    if not found:
        raise FileNotFoundError(f"haproxy is not installed; the inference ports drain through it on stop: {HAPROXY_INSTALL}")
    return found


# ---------------------------------------------------------------- pure parts (tests/unit/test_drain.py)
@dataclass(frozen=True)
class Route:
    """One public inference listener and the private TorchServe port behind it."""

    name: str
    bind: str
    backend: str
    h2: bool


def behind_proxy(props: dict[str, str], http_port: int, grpc_port: int) -> tuple[dict[str, str], list[Route]]:
    """TorchServe's config with its inference listeners moved to private loopback ports, and the routes to them.

    Management and metrics keep their addresses: they are not for clients (loopback, or the pod's scrape port).
    """
    public = urlparse(props.get("inference_address", "http://127.0.0.1:8080"))
    if public.scheme != "http" or public.port is None:
        raise ValueError(f"inference_address must be http://HOST:PORT behind the proxy, got {props.get('inference_address')!r}")
    grpc_bind = f"{props.get('grpc_inference_address', '127.0.0.1')}:{props.get('grpc_inference_port', '7070')}"
    private = {
        **props,
        "inference_address": f"http://127.0.0.1:{http_port}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_inference_port": str(grpc_port),
    }
    routes = [
        Route("http", f"{public.hostname}:{public.port}", f"127.0.0.1:{http_port}", h2=False),
        Route("grpc", grpc_bind, f"127.0.0.1:{grpc_port}", h2=True),
    ]
    return private, routes


def error_response(code: int, reason: str, message: str) -> str:
    """An HAProxy errorfile: the project's JSON error body, and Retry-After on a 503."""
    body = json.dumps({"code": code, "type": reason.replace(" ", ""), "message": message}) + "\n"
    retry = f"Retry-After: {RETRY_AFTER_S}\r\n" if code == 503 else ""
    head = f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n{retry}Cache-Control: no-cache\r\n"
    return f"{head}Content-Length: {len(body.encode())}\r\n\r\n{body}"


ERRORS = {
    502: ("Bad Gateway", "TorchServe closed the connection without an answer"),
    503: ("Service Unavailable", "TorchServe is not answering (starting, restarting or stopping); retry"),
    504: ("Gateway Timeout", "TorchServe did not answer in time"),
}


def haproxy_config(routes: list[Route], run_dir: Path, hard_stop_s: float, server_timeout_s: float, keep_alive_s: float) -> str:
    """HAProxy's config for ``routes``, with its stats socket and error files in ``run_dir``."""
    died = json.dumps({"code": 503, "type": "ServiceUnavailable", "message": "the worker died while serving this request; retry"})
    lines = [
        "# Written by serving/drain.py at start; see its docstring for the stop sequence.",
        "global",
        # Only a safety net if whatever sent the soft stop has died: the drain itself ends it sooner.
        f"    hard-stop-after {hard_stop_s:.0f}s",
        f"    stats socket {run_dir / 'haproxy.sock'} mode 600 level admin",
        # One thread: proxying costs a small fraction of the model's CPU (docs/operations.md), leave it the cores.
        "    nbthread 1",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        # A queued request waits for the worker: TorchServe's response timeout plus a restarted worker's model load.
        f"    timeout server {server_timeout_s:.0f}s",
        f"    timeout client {server_timeout_s:.0f}s",
        "    timeout http-request 30s",
        # Equal to the quiet period: once a drain has seen no request for that long, no idle connection is left.
        f"    timeout http-keep-alive {keep_alive_s:g}s",
        # A soft stop answers an idle keep-alive connection's next request with Connection: close instead of
        # closing it under a client that may be sending (haproxy/haproxy#1506).
        "    option idle-close-on-response",
        *(f"    errorfile {code} {run_dir / f'{code}.http'}" for code in ERRORS),
    ]
    for route in routes:
        h2 = " proto h2" if route.h2 else ""
        lines += [f"frontend {route.name}", f"    bind {route.bind}{h2}", f"    default_backend torchserve-{route.name}"]
        lines += [f"backend torchserve-{route.name}"]
        if route.h2:
            # gRPC: TorchServe sends "Worker died." as RESOURCE_EXHAUSTED (killed) or INTERNAL in a trailers-only
            # answer, whose status is a header here: UNAVAILABLE is the code gRPC retry policies retry.
            lines += ['    http-response set-header grpc-status 14 if { res.hdr(grpc-message) -m sub "Worker died" }']
        else:
            lines += [
                # TorchServe cannot add a header to its errors (NettyUtils.sendError): the proxy answers a worker's
                # death as what it is, a transient 503, and says when to retry every 503 (a full queue too).
                "    http-response wait-for-body time 1s if { status 500 507 }",
                f"    http-response return status 503 content-type application/json string '{died}'"
                f' hdr Retry-After {RETRY_AFTER_S} if {{ status 500 507 }} {{ res.body -m sub "{WORKER_DIED}" }}',
                f"    http-response set-header Retry-After {RETRY_AFTER_S} if {{ status 503 }}",
            ]
        lines += [f"    server torchserve {route.backend}{h2}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Traffic:
    requests: int  # requests received since start, every frontend
    in_flight: int  # requests at TorchServe or waiting for it


def parse_stats(text: str) -> Traffic:
    """``show stat`` CSV: FRONTEND req_tot counts every request received; BACKEND scur + qcur, those not yet answered."""
    rows = list(csv.DictReader(io.StringIO(text.lstrip("# "))))
    requests = sum(int(r["req_tot"] or 0) for r in rows if r["svname"] == "FRONTEND")
    in_flight = sum(int(r["scur"] or 0) + int(r["qcur"] or 0) for r in rows if r["svname"] == "BACKEND")
    return Traffic(requests, in_flight)


# ---------------------------------------------------------------- the proxy and its run folder
class Proxy:
    """HAProxy's files in one run folder: config, error files, stats socket, pid file and the drain marker."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.config = self.run_dir / "haproxy.cfg"
        self.socket = self.run_dir / "haproxy.sock"
        self.pid_file = self.run_dir / "haproxy.pid"
        self.marker = self.run_dir / "draining"
        self.process: subprocess.Popen | None = None

    def configure(self, props: dict[str, str], stop_timeout: float, quiet_s: float) -> dict[str, str]:
        """Write HAProxy's config for ``props``'s inference addresses; return the config TorchServe gets."""
        from serving.launcher import free_port

        private, routes = behind_proxy(props, free_port(), free_port())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.marker.unlink(missing_ok=True)
        for code, (reason, message) in ERRORS.items():
            (self.run_dir / f"{code}.http").write_text(error_response(code, reason, message))
        server_timeout = float(props.get("default_response_timeout", "120")) * 2
        self.config.write_text(haproxy_config(routes, self.run_dir, stop_timeout, server_timeout, quiet_s))
        return private

    def start(self, daemon: bool = False, timeout: float = 30) -> None:
        """Start HAProxy, in the background (``make serve``) or as a child in its own process group."""
        cmd = [haproxy_bin(), "-f", str(self.config), "-p", str(self.pid_file)]
        self.pid_file.unlink(missing_ok=True)
        log_path = self.run_dir / "haproxy.log"
        with open(log_path, "ab") as log:
            if daemon:  # returns once the listeners are bound and the daemon has forked
                failed = subprocess.run([*cmd, "-D"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
            else:
                self.process = subprocess.Popen([*cmd, "-db"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                failed = 0
        deadline = time.monotonic() + timeout
        while failed or self.traffic() is None:
            if failed or (self.process and self.process.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy did not start ({self.config}):\n{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def pid(self) -> int | None:
        if self.process is not None:
            return self.process.pid
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        pid = self.pid()
        if pid is None:  # a foreground HAProxy writes no pid file: the preStop hook asks its socket
            return self.traffic() is not None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def traffic(self) -> Traffic | None:
        """What the stats socket counts now; None when HAProxy does not answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"show stat\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return None
        return parse_stats(b"".join(chunks).decode())

    # -- the drain marker: readiness is false from the first moment of a stop
    def mark(self, state: str) -> None:
        self.marker.write_text(json.dumps({"state": state, "at": time.time()}))

    def draining(self) -> bool:
        return self.marker.exists()

    def drained(self) -> bool:
        """A drain (the preStop hook's) has already waited for quiet."""
        try:
            return json.loads(self.marker.read_text())["state"] != "draining"
        except (OSError, ValueError, KeyError):
            return False

    def wait_quiet(self, quiet_s: float, until: float) -> tuple[bool, int]:
        """Serve on until nothing is in flight and no request arrived for ``quiet_s``, or until ``until``.

        Returns whether it got quiet and how many requests arrived meanwhile.
        """
        first = last = self.traffic()
        if first is None:
            return True, 0  # HAProxy is gone: nothing is left to serve
        changed_at = time.monotonic()
        while True:
            time.sleep(0.05)
            now, seen = time.monotonic(), self.traffic()
            if seen is None:
                return True, last.requests - first.requests
            if seen.requests != last.requests or seen.in_flight:
                changed_at = now
            last = seen
            if now - changed_at >= quiet_s or now >= until:
                return now - changed_at >= quiet_s, last.requests - first.requests

    def soft_stop(self, until: float) -> tuple[float, int]:
        """SIGUSR1, then wait until HAProxy has answered what it accepted and exited; SIGTERM it at ``until``.

        Returns the seconds it took and how many requests were still in flight when it had to be cut.
        """
        started, pid = time.monotonic(), self.pid()
        if pid is None or not self.alive():
            return 0.0, 0
        os.kill(pid, signal.SIGUSR1)
        while self.alive() and time.monotonic() < until:
            time.sleep(0.02)
        cut = 0
        if self.alive():
            cut = (self.traffic() or Traffic(0, 0)).in_flight
            os.kill(pid, signal.SIGTERM)  # HAProxy's hard stop
            while self.alive() and time.monotonic() < until + 2:
                time.sleep(0.02)
        return time.monotonic() - started, cut


def drain(proxy: Proxy, stop_timeout: float, quiet_s: float, started: float | None = None) -> str:
    """Steps 1-3 of the module docstring, within ``stop_timeout`` minus TorchServe's share; a line saying what happened.

    A drain that a preStop hook already ran (``entrypoint.py drain``) is not waited for twice.
    """
    started = time.monotonic() if started is None else started
    deadline = started + stop_timeout - TORCHSERVE_STOP_S
    parts = []
    if not proxy.drained():
        proxy.mark("draining")
        quiet, served = proxy.wait_quiet(quiet_s, started + quiet_budget(stop_timeout))
        waited = time.monotonic() - started
        parts.append(f"{'quiet' if quiet else 'not quiet'} after {waited:.1f} s ({served} requests served meanwhile)")
    took, cut = proxy.soft_stop(deadline)
    parts.append(f"proxy closed {took:.1f} s after the soft stop" + (f", {cut} requests cut at the deadline" if cut else ""))
    return "drain: " + "; ".join(parts)
