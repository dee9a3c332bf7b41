"""What the handler's metrics and drift monitor cost: two archives of the same model, one built from a handler
without them (a git revision) and ours, served side by side and loaded in turns (A B A B ...) by the bench's
locust runs, so that both see the same machine conditions.

    flock /tmp/bench.lock python -m benchmarks.metrics_overhead --baseline-mar BASE.mar --mar model_store/classifier.mar

docs/monitoring.md shows how BASE.mar is built (`git archive` of the revision before the metrics, `make archive`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.running import run_locust
from loadtests.images import write_images
from serving.launcher import REPO, TorchServeProcess, loopback_overrides


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-mar", type=Path, required=True, help="archive whose handler records no metrics")
    p.add_argument("--mar", type=Path, default=REPO / "model_store" / "classifier.mar", help="our archive")
    p.add_argument("--users", type=int, default=16, help="locust users (default: 16)")
    p.add_argument("--rounds", type=int, default=4, help="A/B pairs (default: 4)")
    p.add_argument("--duration", type=float, default=20, help="measured seconds per run (default: 20)")
    p.add_argument("--warmup", type=float, default=5, help="discarded seconds before each run (default: 5)")
    p.add_argument("--image-dir", type=Path, default=REPO / "build" / "loadtest_images", help="images to post")
    p.add_argument("--work-dir", type=Path, default=REPO / "build" / "metrics-overhead", help="servers and CSVs")
    args = p.parse_args(argv)
    if not args.image_dir.exists():
        write_images(args.image_dir)
    runs: dict[str, list[float]] = {"baseline": [], "metrics": []}
    with (
        TorchServeProcess(
            REPO / "config.properties",
            args.work_dir / "baseline",
            loopback_overrides(args.baseline_mar.parent, f"classifier={args.baseline_mar.name}"),
        ) as base,
        TorchServeProcess(
            REPO / "config.properties",
            args.work_dir / "metrics",
            loopback_overrides(args.mar.parent, f"classifier={args.mar.name}"),
        ) as ours,
    ):
        for n in range(args.rounds):
            order = [("baseline", base), ("metrics", ours)] if n % 2 == 0 else [("metrics", ours), ("baseline", base)]
            for name, ts in order:
                csv = args.work_dir / "csv" / f"{name}-{n}"
                run_locust(
                    ts.inference_url,
                    args.users,
                    args.warmup,
                    args.image_dir,
                    "classifier",
                    "ours",
                    csv.with_name(csv.name + "-warmup"),
                )
                result = run_locust(ts.inference_url, args.users, args.duration, args.image_dir, "classifier", "ours", csv)
                runs[name].append(result["rps"])
                print(
                    f"round {n + 1} {name}: {result['rps']:.1f} req/s, p50 {result['p50_ms']:.0f} ms, "
                    f"{result['failures']} failed",
                    flush=True,
                )
    base_rps, ours_rps = statistics.median(runs["baseline"]), statistics.median(runs["metrics"])
    report = {**runs, "median_baseline": base_rps, "median_metrics": ours_rps, "ratio": ours_rps / base_rps, "users": args.users}
    print(
        f"median req/s at {args.users} clients: baseline {base_rps:.1f}, with metrics {ours_rps:.1f} "
        f"(ratio {ours_rps / base_rps:.3f})"
    )
    (args.work_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
