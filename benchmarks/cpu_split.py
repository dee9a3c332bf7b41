"""Where the CPU of a served request goes: Java frontend, Python worker and load client, under locust load.

    python -m benchmarks.cpu_split model_store/classifier.mar build/loadtest_photos --users 16
    python -m benchmarks.cpu_split model_store/classifier.mar build/loadtest_images --users 16 --vmargs=-XX:+UseParallelGC
    python -m benchmarks.cpu_split model_store/classifier.mar build/loadtest_images --users 16 --proxy

A private TorchServe on free loopback ports serves the archive; locust (the load tests' locustfile, as ``make bench``
runs it) warms it for 5 s, then loads it for ``--seconds``. Printed: req/s and latency, the CPU seconds each
process spent per answered request (user + system, from /proc), and the mean of each handler stage from the
metrics endpoint. On a machine where the client shares the cores with the server, the three CPU figures add up to
about ``cores x 1000 / req/s`` ms: the budget a faster pipeline has to fit in. ``--proxy`` serves through the draining
proxy of ``make serve`` and the image (serving/drain.py), the load going through it, and prints its CPU as well.
Writes nothing but the locust CSVs under ``--work``.
"""

from __future__ import annotations

import argparse
import re
import resource
import urllib.request
from pathlib import Path

from benchmarks.running import process_cpu, run_locust
from serving.launcher import REPO, TorchServeProcess, loopback_overrides

STAGE = re.compile(r'^classifier_stage_duration_seconds_(sum|count)\{.*stage="(\w+)".*\} (\S+)$')


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # locust runs as a child and has exited by then
    return usage.ru_utime + usage.ru_stime


def stage_means(exposition: str) -> dict[str, float]:
    """Mean ms of each handler stage (decode, preprocess, inference, postprocess) in a /metrics page."""
    totals: dict[str, dict[str, float]] = {}
    for line in exposition.splitlines():
        if match := STAGE.match(line):
            kind, stage, value = match.groups()
            totals.setdefault(stage, {})[kind] = totals.get(stage, {}).get(kind, 0.0) + float(value)
    return {stage: 1e3 * t["sum"] / t["count"] for stage, t in totals.items() if t.get("count")}


def main(argv: list[str] | None = None) -> None:
    import psutil

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mar", type=Path, help="the archive to serve")
    parser.add_argument("image_dir", type=Path, help="the images locust sends (e.g. build/loadtest_photos)")
    parser.add_argument("--users", type=int, default=16, help="concurrent locust users (default: 16)")
    parser.add_argument("--seconds", type=float, default=20, help="measured load after a 5 s warm-up (default: 20)")
    parser.add_argument("--vmargs", default="", help="JVM options for the frontend (default: TorchServe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another config.properties override")
    parser.add_argument("--proxy", action="store_true", help="serve through the draining proxy (HAProxy), as make serve does")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "cpu_split", help="server and locust files")
    args = parser.parse_args(argv)

    overrides = loopback_overrides(args.mar.parent, f"classifier={args.mar.name}")
    overrides.update(dict(item.split("=", 1) for item in args.set))
    if args.vmargs:
        overrides["vmargs"] = args.vmargs
    with TorchServeProcess(REPO / "config.properties", args.work / "ts", overrides, model="classifier", proxy=args.proxy) as ts:
        procs = psutil.Process(ts.proc.pid).children(recursive=True)
        proxy = [psutil.Process(ts.proxy.pid())] if ts.proxy else []
        run_locust(ts.inference_url, args.users, 5, args.image_dir, "classifier", "ours", args.work / "warmup")
        before = process_cpu(procs, True), process_cpu(procs, False), client_cpu(), process_cpu(proxy, False)
        result = run_locust(ts.inference_url, args.users, args.seconds, args.image_dir, "classifier", "ours", args.work / "run")
        after = process_cpu(procs, True), process_cpu(procs, False), client_cpu(), process_cpu(proxy, False)
        stages = stage_means(urllib.request.urlopen(f"{ts.props['metrics_address']}/metrics", timeout=10).read().decode())
    answered = result["requests"] - result["failures"]
    java, worker, client, haproxy = (1e3 * (b - a) / answered for a, b in zip(before, after, strict=True))
    rps, p50, p99 = result["rps"], result["p50_ms"], result["p99_ms"]
    print(f"{args.image_dir.name}, {args.users} users: {rps:.1f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    total = java + worker + client + haproxy
    through = f", HAProxy {haproxy:.1f}" if args.proxy else ""
    parts = f"Java frontend {java:.1f}, Python worker {worker:.1f}{through}, client {client:.1f}"
    print(f"CPU ms per request: {parts}; sum {total:.1f}")
    means = ", ".join(f"{k} {v:.1f}" for k, v in sorted(stages.items()))
    print(f"handler stages, mean ms per batch (decode: per image): {means}")


if __name__ == "__main__":
    main()
