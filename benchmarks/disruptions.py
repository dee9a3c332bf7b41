"""What clients see when the server stops or its worker dies, under bounded load (docs/operations.md).

    python -m benchmarks.disruptions stop model_store/classifier.mar                 # drain through the proxy
    python -m benchmarks.disruptions stop model_store/classifier.mar --no-proxy      # SIGTERM to the frontend, as before
    python -m benchmarks.disruptions kill-worker model_store/classifier.mar          # SIGKILL the one worker

A private TorchServe on free loopback ports serves the archive, behind the draining proxy (serving/drain.py) unless
``--no-proxy``; the clients of loadtests/stop_load.py (8: 4 HTTP keep-alive, 2 HTTP a connection per request,
2 gRPC) load it until each has been answered 3 times, then the event happens:

- ``stop``: the server's own stop (the drain, or SIGTERM to the Java frontend without the proxy). Printed: every
  outcome before and after the stop began, and how long the stop took;
- ``kill-worker``: SIGKILL to the worker process, load going on for ``--after`` seconds past the new worker's
  READY. Printed: the window (kill to READY, and kill to the first answer the new worker gave), what the requests
  in flight at the kill got (status, Retry-After), and how long the requests queued meanwhile waited.

Bounded: the clients stop at ``--seconds`` or 2000 requests each. Writes nothing but the server's folder under
``--work``. Run it under ``flock /tmp/bench.lock`` on a shared machine and note the load average it prints.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections import Counter
from pathlib import Path

import psutil

from loadtests.stop_load import Outcome, StopLoad
from serving.launcher import REPO, TorchServeProcess, loopback_overrides, model_workers


def kinds(outcomes: list[Outcome]) -> str:
    counted = Counter(o.kind for o in outcomes)
    return ", ".join(f"{k} {n}" for k, n in sorted(counted.items())) or "none"


def stop_event(ts: TorchServeProcess, load: StopLoad, proxied: bool) -> None:
    began = time.monotonic()
    if proxied:
        ts.stop()
    else:  # what `torchserve --stop` and the old entrypoint did: SIGTERM to the Java frontend
        [java] = [p for p in psutil.Process(ts.proc.pid).children(recursive=True) if "java" in p.name()]
        java.send_signal(signal.SIGTERM)
        java.wait(60)
    took = time.monotonic() - began
    load.stop(wait=15)
    before = [o for o in load.outcomes if o.sent < began]
    print(f"stop took {took:.1f} s {ts.drain_report}")
    print(f"requests sent before the stop began: {kinds(before)}")
    print(f"requests sent after the stop began:  {kinds([o for o in load.outcomes if o.sent >= began])}")
    for o in load.failures()[:8]:
        print(f"  {o.client}: {o.kind} {o.detail[:140]}")


def kill_worker_event(ts: TorchServeProcess, load: StopLoad, after: float) -> None:
    [worker] = model_workers(ts.management_url, "classifier")
    killed = time.monotonic()
    os.kill(int(worker["pid"]), signal.SIGKILL)
    while True:
        workers = model_workers(ts.management_url, "classifier")
        if workers and workers[0]["pid"] != worker["pid"] and workers[0]["status"] == "READY":
            break
        if time.monotonic() - killed > 300:
            raise SystemExit(f"no new READY worker 300 s after the kill: {workers}")
        time.sleep(0.05)
    ready = time.monotonic()
    time.sleep(after)
    load.stop()
    outcomes = sorted(load.outcomes, key=lambda o: o.sent)
    in_flight = [o for o in outcomes if o.sent < killed < o.at]
    failed_then = [o for o in in_flight if o.kind != "answered"]
    queued = [o for o in in_flight if o.kind == "answered"] + [o for o in outcomes if killed <= o.sent < ready]
    first = min((o.at for o in outcomes if o.kind == "answered" and o.at > ready - 0.001 and o.sent > killed), default=None)
    print(
        f"kill -> new worker READY: {ready - killed:.1f} s; kill -> first answer sent after the kill: "
        + (f"{first - killed:.1f} s" if first else "none")
    )
    print(f"in flight at the kill ({len(in_flight)}): {kinds(in_flight)}")
    for o in failed_then:
        print(f"  {o.client}: {o.kind} Retry-After {o.retry_after} after {o.at - killed:.2f} s: {o.detail[:120]}")
    waits = sorted(o.at - o.sent for o in queued if o.kind == "answered")
    if waits:
        print(
            f"sent during the restart or answered after it ({len(queued)}): {kinds(queued)}; "
            f"waited {waits[0]:.1f}-{waits[-1]:.1f} s"
        )
    print(f"after READY: {kinds([o for o in outcomes if o.sent >= ready])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("event", choices=["stop", "kill-worker"])
    parser.add_argument("mar", type=Path, help="the archive to serve")
    parser.add_argument("--no-proxy", action="store_true", help="TorchServe alone on the inference ports, as before the drain")
    parser.add_argument("--image", type=Path, default=REPO / "docs" / "sample.png", help="what the clients send")
    parser.add_argument("--seconds", type=float, default=180, help="bound on the load (default: 180)")
    parser.add_argument("--after", type=float, default=5, help="kill-worker: load after the new READY (default: 5)")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "disruptions", help="the server's folder")
    args = parser.parse_args(argv)

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.event}, proxy: {not args.no_proxy}")
    overrides = loopback_overrides(args.mar.parent, f"classifier={args.mar.name}")
    ts = TorchServeProcess(REPO / "config.properties", args.work, overrides, proxy=not args.no_proxy).start()
    try:
        http = ("127.0.0.1", int(ts.props["inference_address"].rsplit(":", 1)[1]))
        grpc = ("127.0.0.1", int(ts.props["grpc_inference_port"]))
        with StopLoad(http, grpc, args.image.read_bytes(), seconds=args.seconds) as load:
            load.wait_answers(3)
            if args.event == "stop":
                stop_event(ts, load, not args.no_proxy)
            else:
                kill_worker_event(ts, load, args.after)
    finally:
        ts.stop()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
