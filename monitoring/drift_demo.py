"""The drift gauges over a real run: a private TorchServe serving an archive, a private Prometheus scraping it
every second, and image streams sent in phases (in-distribution, shifted, in-distribution again).

    python -m monitoring.drift_demo --mar model_store/classifier.mar --shift photo_like   # writes docs/monitoring-drift.*

The PSI series come back from Prometheus' own query API, so the plot shows what a dashboard would.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from monitoring.drift_streams import SHIFTS, images, png_bytes
from serving.launcher import REPO, TorchServeProcess, loopback_overrides
from serving.prometheus import PrometheusProcess

ALERT = 0.25  # monitoring/alerts.yml


def send(url: str, bodies: list[bytes], clients: int) -> int:
    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(lambda body: requests.put(url, data=body, timeout=120).status_code, bodies))
    return codes.count(200)


def plot(series: dict[str, list[tuple[float, float]]], phases: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = phases[0]["start"]
    fig, ax = plt.subplots(figsize=(9, 4))
    for phase in phases:
        if phase["shift"] != "none":
            ax.axvspan(phase["start"] - t0, phase["end"] - t0, color="tab:red", alpha=0.08, label=f"{phase['shift']} stream")
    for signal, points in sorted(series.items()):
        ax.plot([t - t0 for t, _ in points], [v for _, v in points], label=signal)
    ax.axhline(ALERT, color="black", linestyle="--", linewidth=1, label=f"alert threshold ({ALERT})")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the first request (the gauge appears after 100 answers)")
    ax.set_ylabel("classifier_drift_psi")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mar", type=Path, default=REPO / "model_store" / "classifier.mar", help="archive to serve")
    p.add_argument("--shift", default="photo_like", choices=[s for s in SHIFTS if s != "none"], help="the shifted phase")
    p.add_argument("--count", type=int, default=600, help="images per phase (default: 600)")
    p.add_argument("--clients", type=int, default=8, help="concurrent requests (default: 8)")
    p.add_argument("--work-dir", type=Path, default=REPO / "build" / "drift-demo", help="servers' folders")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "monitoring-drift.png", help="plot; a .json beside it")
    args = p.parse_args(argv)
    store = args.mar.resolve().parent
    overrides = loopback_overrides(store, f"classifier={args.mar.name}")
    phases = []
    with (
        TorchServeProcess(REPO / "config.properties", args.work_dir / "ts", overrides) as ts,
        PrometheusProcess([overrides["metrics_address"].removeprefix("http://")], args.work_dir / "prometheus") as prom,
    ):
        url = f"{ts.inference_url}/predictions/classifier"
        streams = [
            (shift, [png_bytes(img) for img in images(shift, args.count, 100 + n)])
            for n, shift in enumerate(["none", args.shift, "none"])
        ]
        for n, (shift, bodies) in enumerate(streams):
            start = time.time()
            ok = send(url, bodies, args.clients)
            phases.append({"shift": shift, "images": args.count, "answered": ok, "start": start, "end": time.time()})
            print(f"phase {n + 1}: {ok}/{args.count} {shift} images answered in {phases[-1]['end'] - start:.0f} s")
        time.sleep(3)  # a last scrape
        result = prom.query_range("classifier_drift_psi", phases[0]["start"], time.time(), 1)
    series = {r["metric"]["signal"]: [(float(t), float(v)) for t, v in r["values"]] for r in result}
    report = {"phases": phases, "series": series, "mar": str(args.mar), "clients": args.clients}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    plot(
        series,
        phases,
        args.out,
        f"drift PSI (window 500) as {args.count} in-distribution, {args.count} {args.shift}, "
        f"{args.count} in-distribution images arrive",
    )
    for signal, points in sorted(series.items()):
        peak = max(v for _, v in points)
        print(f"{signal}: peak PSI {peak:.3f}, last {points[-1][1]:.3f}")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return report


if __name__ == "__main__":
    main()
