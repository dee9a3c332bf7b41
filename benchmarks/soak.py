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

from benchmarks import reports
from serving.launcher import REPO, TorchServeProcess, loopback_overrides, model_workers
from training import synthetic

# One RSS sample: seconds since the load started, worker and frontend RSS, requests answered OK and failed so far.
SAMPLE_FIELDS = ("t", "worker_mb", "frontend_mb", "ok", "failed")


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


def render(run: dict) -> str:
    """docs/soak.md (templates/soak.md.j2) from a run's RSS samples, request counts and settings (see :func:`main`)."""
    samples = [dict(zip(SAMPLE_FIELDS, s, strict=True)) for s in run["samples"]]
    steady = [s for s in samples if s["t"] >= run["warmup"]]
    total = run["ok"] + run["failed"]
    return reports.render(
        "soak.md.j2",
        **{**run, "samples": samples},
        total=total,
        rate=total / run["duration"],
        first=steady[0],
        last=samples[-1],
        worker_slope=slope_mb_per_min([(s["t"], s["worker_mb"]) for s in steady]),
        frontend_slope=slope_mb_per_min([(s["t"], s["frontend_mb"]) for s in steady]),
    )


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

    run = {
        "date": str(dt.date.today()),
        "host": platform.node(),
        "cpus": psutil.cpu_count(),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "clients": args.clients,
        "duration": args.duration,
        "warmup": args.warmup,
        "ok": counts["ok"],
        "failed": counts["failed"],
        "samples": samples,
        "same_worker": same_worker,
    }
    page = render(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print("\n".join(page.splitlines()[:12]))
    if counts["failed"] or not same_worker:
        raise SystemExit("soak saw failed requests or a restarted worker")


if __name__ == "__main__":
    main()
