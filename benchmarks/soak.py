"""Bounded soak: serve the archived model, load it for a fixed time, and record memory over time.

    python -m benchmarks.soak [--duration 300] [--clients 4] [--out docs/soak.md]

Starts its own TorchServe on free loopback ports with model_store/classifier.mar,
runs ``--clients`` closed-loop clients for ``--duration`` seconds, samples the RSS
of the Python worker and of the Java frontend every ``--interval`` seconds, and
writes a Markdown report. A leak shows as a positive RSS slope after warm-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

from serving.launcher import REPO, TorchServeProcess, loopback_overrides, model_workers
from training import synthetic


def payloads(count: int = 24) -> list[bytes]:
    """Generated PNG and JPEG images of mixed sizes, read once."""
    tmp = REPO / "build" / "soak_images"
    shutil.rmtree(tmp, ignore_errors=True)
    return [p.read_bytes() for p in synthetic.write_folder(tmp, per_class=count // 4, seed=99)]


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def java_pid(root: int) -> int:
    """The Java frontend: a child of the `torchserve` launcher process, which is itself Python."""
    for proc in psutil.Process(root).children(recursive=True):
        if proc.name().startswith("java"):
            return proc.pid
    raise RuntimeError("no Java frontend under the torchserve process")


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    t = np.array([s[0] for s in samples]) / 60.0
    y = np.array([s[1] for s in samples])
    return float(np.polyfit(t, y, 1)[0]) if len(samples) > 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (default: 300)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent closed-loop clients (default: 4)")
    parser.add_argument("--interval", type=float, default=10, help="seconds between RSS samples (default: 10)")
    parser.add_argument("--warmup", type=float, default=60, help="seconds excluded from the slope (default: 60)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "soak.md", help="report (default: docs/soak.md)")
    args = parser.parse_args()

    bodies = payloads()
    overrides = loopback_overrides(REPO / "model_store")
    with TorchServeProcess(REPO / "config.properties", REPO / "build" / "soak_server", overrides) as ts:
        url = f"{ts.inference_url}/predictions/classifier"
        [worker] = model_workers(ts.management_url, "classifier")
        worker_pid, frontend_pid = int(worker["pid"]), java_pid(ts.proc.pid)
        counts = {"ok": 0, "failed": 0}
        stop = threading.Event()

        def client(offset: int) -> None:
            session, i = requests.Session(), offset
            while not stop.is_set():
                try:
                    ok = session.post(url, data=bodies[i % len(bodies)], timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                counts["ok" if ok else "failed"] += 1
                i += 1

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        samples = []
        while (elapsed := time.monotonic() - start) < args.duration:
            samples.append((elapsed, rss_mb(worker_pid), rss_mb(frontend_pid), counts["ok"], counts["failed"]))
            time.sleep(min(args.interval, max(0.0, args.duration - elapsed)))
        stop.set()
        for t in threads:
            t.join(timeout=70)
        samples.append((time.monotonic() - start, rss_mb(worker_pid), rss_mb(frontend_pid), counts["ok"], counts["failed"]))
        same_worker = [int(w["pid"]) for w in model_workers(ts.management_url, "classifier")] == [worker_pid]

    steady = [s for s in samples if s[0] >= args.warmup]
    worker_slope = slope_mb_per_min([(s[0], s[1]) for s in steady])
    frontend_slope = slope_mb_per_min([(s[0], s[2]) for s in steady])
    total = counts["ok"] + counts["failed"]
    lines = [
        "# Soak: memory under sustained load",
        "",
        f"Measured {dt.date.today()} on {platform.node()} "
        f"({psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB), "
        f"model `model_store/classifier.mar`, {args.clients} closed-loop clients over loopback for {args.duration:.0f} s.",
        "",
        "Reproduce: `make soak` (`python -m benchmarks.soak --duration 300 --clients 4`).",
        "",
        f"- requests: {total} ({counts['ok']} OK, {counts['failed']} failed), {total / args.duration:.1f} req/s",
        f"- worker RSS: {steady[0][1]:.0f} MB at {steady[0][0]:.0f} s, {samples[-1][1]:.0f} MB at the end; "
        f"slope after {args.warmup:.0f} s warm-up: **{worker_slope:+.2f} MB/min**",
        f"- frontend (Java) RSS: {steady[0][2]:.0f} MB at {steady[0][0]:.0f} s, {samples[-1][2]:.0f} MB at the end; "
        f"slope {frontend_slope:+.2f} MB/min",
        f"- the same worker process served the whole run: {'yes' if same_worker else 'NO'}",
        "",
        "| t (s) | worker RSS (MB) | frontend RSS (MB) | OK | failed |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {t:.0f} | {w:.0f} | {f:.0f} | {ok} | {bad} |" for t, w, f, ok, bad in samples],
        "",
        "The throughput here is not a benchmark: see docs/benchmarks.md for that.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))
    if counts["failed"] or not same_worker:
        raise SystemExit("soak saw failed requests or a restarted worker")


if __name__ == "__main__":
    main()
