"""Side-by-side benchmark: raw model, our served endpoint, and stock TorchServe, in one run on one machine.

    make bench                                      # python -m benchmarks.bench
    python -m benchmarks.bench --duration 5 --warmup 2 --raw-seconds 3 --out-dir build/bench-short   # a quick check

1. Raw model: the served artifact (build/model/model.pt2) through classifier.backends.load_backend, in-process,
   with ``--threads`` torch threads, at every ``--batch-sizes`` (images/s). ``--backends`` picks which backends.
2. Ours: model_store/classifier.mar on a private TorchServe (config.properties, free loopback ports), loaded
   by the real locust (headless, subprocess) at each ``--concurrency`` for ``--duration`` s after a ``--warmup``.
3. Stock: TorchServe's own image_classifier handler serving the same ResNet50 weights with TorchServe's
   default config (benchmarks/stock/config.properties: workers = one per core, no batching), same images,
   same locust client.
4. Phone photos: both servers again on 12 MP JPEGs (``--photo-dir``, made by ``loadtests.images --kind photos``)
   at ``--photo-concurrency``; ``--workload NAME=DIR`` adds more such image sets, ``--only-photos`` skips 1 and
   the mixed levels, and ``--baseline-mar`` serves an older archive beside ours (same config) for a before/after.

Writes ``benchmarks.md``, ``benchmarks.json`` (raw numbers, for comparing runs) and ``benchmarks.png`` into
``--out-dir`` (default docs/). Every server it starts is stopped on exit, failure and SIGTERM included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import yaml

from benchmarks import reports
from benchmarks.running import machine, run_locust
from classifier.backends import BACKENDS
from classifier.settings import HandlerSettings
from serving.launcher import REPO, TorchServeProcess, loopback_overrides

STOCK_DIR = REPO / "benchmarks" / "stock"
STOCK_TOPK = 5  # what TorchServe's ImageClassifier asks torch.topk for
SERVERS = ("ours", "stock")
MIXED = "mixed"  # the workload of --image-dir, measured at --concurrency; the headline is about it


# ---------------------------------------------------------------- pure helpers (unit-tested)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def best_batch(raw: list[dict], backend: str) -> dict | None:
    """The raw-model record with the highest images/s for ``backend``."""
    rows = [r for r in raw if r["backend"] == backend]
    return max(rows, key=lambda r: r["images_per_s"]) if rows else None


def find(records: list[dict], **match) -> dict | None:
    return next((r for r in records if all(r.get(k) == v for k, v in match.items())), None)


def workload_rows(served: list[dict], workload: str = MIXED) -> list[dict]:
    """The served rows of one workload (rows without a workload are from the mixed images)."""
    return [r for r in served if r.get("workload", MIXED) == workload]


def headline(raw: list[dict], served: list[dict], served_backend: str) -> list[dict]:
    """Per concurrency: ours / stock throughput, stock p99 / ours p99, and ours served / raw model throughput."""
    served = workload_rows(served)
    best, bs1 = best_batch(raw, served_backend), find(raw, backend=served_backend, batch_size=1)
    rows = []
    for c in sorted({r["concurrency"] for r in served}):
        ours, stock = find(served, server="ours", concurrency=c) or {}, find(served, server="stock", concurrency=c) or {}
        rows.append(
            {
                "concurrency": c,
                "throughput_ours_over_stock": ratio(ours.get("rps"), stock.get("rps")),
                "p99_stock_over_ours": ratio(stock.get("p99_ms"), ours.get("p99_ms")),
                "served_over_raw_bs1": ratio(ours.get("rps"), bs1 and bs1["images_per_s"]),
                "served_over_raw_best": ratio(ours.get("rps"), best and best["images_per_s"]),
            }
        )
    return rows


def render_markdown(report: dict) -> str:
    """docs/benchmarks.md (templates/benchmarks.md.j2) from the report dict that is also written as JSON."""
    settings = report["settings"]
    return reports.render(
        "benchmarks.md.j2",
        date=report["date"],
        command=report["command"],
        m=report["machine"],
        versions=report["versions"],
        s=settings,
        headline=report["headline"],  # empty with --only-photos: then only the workload table has numbers
        served=served_table(report),
        raw=raw_table(report["raw"]),
        batch_sizes=sorted({r["batch_size"] for r in report["raw"]}),
        workloads=workload_section(report),
        workload_dirs=settings.get("workloads", {}),
        baseline_mar=settings.get("baseline_mar"),
    )


def served_table(report: dict) -> list[dict]:
    """Per headline concurrency, the mixed-images rows of ours and stock ({} when not measured) and their ratio."""
    served = workload_rows(report["served"])
    return [
        {
            "concurrency": h["concurrency"],
            "ours": find(served, server="ours", concurrency=h["concurrency"]) or {},
            "stock": find(served, server="stock", concurrency=h["concurrency"]) or {},
            "ours_over_stock": h["throughput_ours_over_stock"],
        }
        for h in report["headline"]
    ]


def raw_table(raw: list[dict]) -> list[dict]:
    """Per backend: images/s at every measured batch size (None where not measured) and the best record."""
    batch_sizes = sorted({r["batch_size"] for r in raw})
    return [
        {
            "backend": backend,
            "images_per_s": [(find(raw, backend=backend, batch_size=b) or {}).get("images_per_s") for b in batch_sizes],
            "best": best_batch(raw, backend),
        }
        for backend in sorted({r["backend"] for r in raw})
    ]


def workload_section(report: dict) -> list[dict]:
    """The rows of the other workloads' table (phone photos first), each with its ratios to stock and to the
    baseline at the same workload and concurrency; empty when the run measured only the mixed images."""
    others = [r for r in report["served"] if r.get("workload", MIXED) != MIXED]
    rows = []
    for row in sorted(others, key=lambda r: (r["workload"] != "photos", r["workload"], r["concurrency"], r["server"])):
        same = {"workload": row["workload"], "concurrency": row["concurrency"]}
        stock, base = find(others, server="stock", **same) or {}, find(others, server="baseline", **same) or {}
        rows.append(
            {**row, "vs_stock": ratio(row.get("rps"), stock.get("rps")), "vs_baseline": ratio(row.get("rps"), base.get("rps"))}
        )
    return rows


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server, style in (("ours", "o-"), ("stock", "s--")):
        rows = sorted((r for r in workload_rows(report["served"]) if r["server"] == server), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in rows]
        ax_tp.plot(xs, [r["rps"] for r in rows], style, label=server)
        ax_p99.plot(xs, [r["p99_ms"] for r in rows], style, label=server)
    backend = report["settings"]["served_backend"]
    best, bs1 = best_batch(report["raw"], backend), find(report["raw"], backend=backend, batch_size=1)
    if bs1:
        ax_tp.axhline(bs1["images_per_s"], color="grey", linestyle=":", label=f"raw {backend} bs 1")
    if best:
        ax_tp.axhline(best["images_per_s"], color="black", linestyle=":", label=f"raw {backend} bs {best['batch_size']}")
    for ax, title, unit in ((ax_tp, "throughput", "requests/s"), (ax_p99, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(report["settings"]["concurrency"], [str(c) for c in report["settings"]["concurrency"]])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_p99.set_ylim(bottom=0)
    ax_tp.set_ylim(bottom=0)
    fig.suptitle(f"ResNet50 on {report['machine']['cpu']} ({report['machine']['cores']} cores), {report['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- versions


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "torchvision", "torchserve", "locust", "captum"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------- 1. raw model


def measure_raw(kind: str, model_dir: Path, batch_sizes: list[int], seconds: float, threads: int, input_size: int) -> list[dict]:
    """Images/s of ``load_backend(kind, model_dir, cpu)`` at each batch size: 1 warm-up call, then ``seconds`` of calls."""
    import torch

    from classifier.backends import load_backend

    torch.set_num_threads(threads)
    backend = load_backend(kind, model_dir, torch.device("cpu"))
    rows = []
    for bs in batch_sizes:
        x = torch.randn(bs, 3, input_size, input_size)
        backend(x)
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
            backend(x)
            calls += 1
        rows.append({"backend": kind, "batch_size": bs, "images_per_s": calls * bs / elapsed, "calls": calls})
        print(f"raw {kind} bs {bs}: {rows[-1]['images_per_s']:.1f} img/s ({calls} calls in {elapsed:.1f} s)", flush=True)
    del backend
    gc.collect()
    return rows


# ---------------------------------------------------------------- 2 and 3. servers under locust


def stock_handler(num_classes: int) -> str:
    """``image_classifier`` itself, unless the model has fewer classes than its topk (then the same handler with topk 2)."""
    return "image_classifier" if num_classes >= STOCK_TOPK else str(STOCK_DIR / "top2_image_classifier.py")


def build_stock_archive(model_dir: Path, work: Path) -> tuple[Path, str]:
    """stock.mar: torchvision ResNet50 + the backbone weights of our model.pt2 + TorchServe's image classifier handler."""
    import torch
    from torchvision.models import resnet50

    work.mkdir(parents=True, exist_ok=True)
    labels = json.loads((model_dir / "index_to_name.json").read_text())
    state = torch.export.load(str(model_dir / "model.pt2")).module().state_dict()
    backbone = {k.removeprefix("backbone."): v.detach().clone() for k, v in state.items() if k.startswith("backbone.")}
    try:  # fail here with a clear message rather than in a TorchServe worker that retries forever
        resnet50(num_classes=len(labels)).load_state_dict(backbone)
    except RuntimeError as exc:
        raise SystemExit(
            f"error: the stock baseline needs a ResNet50 model in {model_dir}; its weights do not fit: {exc}"
        ) from None
    weights = work / "resnet50_backbone.pth"
    torch.save(backbone, weights)
    store = work / "model_store"
    store.mkdir(exist_ok=True)
    handler = stock_handler(len(labels))
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run(
        [
            str(archiver) if archiver.exists() else "torch-model-archiver",
            "--force",
            "--model-name",
            "stock",
            "--version",
            "1.0",
            "--model-file",
            str(STOCK_DIR / "stock_resnet50.py"),
            "--serialized-file",
            str(weights),
            "--handler",
            handler,
            "--extra-files",
            str(model_dir / "index_to_name.json"),
            "--export-path",
            str(store),
        ],
        check=True,
    )
    return store / "stock.mar", handler


def measure_server(
    name: str, ts: TorchServeProcess, model: str, response_format: str, levels: list[tuple[str, Path, int]], args, work: Path
) -> list[dict]:
    """Each ``(workload, image_dir, users)`` level: a discarded warm-up, then ``args.duration`` s measured."""
    rows = []
    for workload, image_dir, users in levels:
        tag = f"{workload}-c{users}"
        if args.warmup > 0:
            run_locust(ts.inference_url, users, args.warmup, image_dir, model, response_format, work / "warmup" / tag)
        result = run_locust(ts.inference_url, users, args.duration, image_dir, model, response_format, work / tag)
        rows.append({"server": name, "workload": workload, "concurrency": users, **result})
        label = name if workload == MIXED else f"{name} {workload}"  # delay_sweep.sh greps "ours c=N:"
        print(
            f"{label} c={users}: {reports.measured(result['rps'])} req/s, p50 {reports.measured(result['p50_ms'], '.0f')} ms, "
            f"p99 {reports.measured(result['p99_ms'], '.0f')} ms, {result['failures']} failed of {result['requests']}",
            flush=True,
        )
    return rows


def workload_levels(args) -> list[tuple[str, Path, int]]:
    """The mixed images at --concurrency (unless --only-photos), then every other workload at --photo-concurrency."""
    levels = [] if args.only_photos else [(MIXED, args.image_dir, users) for users in args.concurrency]
    for name, image_dir in extra_workloads(args).items():
        levels += [(name, Path(image_dir), users) for users in args.photo_concurrency]
    return levels


def extra_workloads(args) -> dict[str, Path]:
    return {"photos": args.photo_dir, **dict(args.workload)}


def display_path(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it, so the report names no machine's checkout."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def workload_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path or name == MIXED:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with a name other than {MIXED!r}, got {text!r}")
    return name, Path(path)


# ---------------------------------------------------------------- main


def archive_backend(mar: Path) -> str:
    """The backend a .mar asks for: its own model-config (named in MAR-INF/MANIFEST.json), not the repo's template."""
    with zipfile.ZipFile(mar) as z:
        config_name = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"].get("configFile")
        config = yaml.safe_load(z.read(config_name)) if config_name else {}
    return ((config or {}).get("handler") or {}).get("backend", HandlerSettings.backend)  # the handler's default


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=25, help="measured seconds per concurrency level (default: 25)")
    p.add_argument("--warmup", type=float, default=5, help="discarded warm-up seconds before each level (default: 5)")
    p.add_argument("--concurrency", type=int_list, default=[1, 4, 16], help="locust users per level (default: 1,4,16)")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 4, 8, 16], help="raw-model batch sizes (default: 1,4,8,16)")
    p.add_argument("--raw-seconds", type=float, default=6, help="seconds per raw-model batch size (default: 6)")
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated classifier.backends kinds for the raw model (default: {','.join(BACKENDS)})",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads for the raw model (default: 2)")
    p.add_argument("--model-dir", type=Path, default=REPO / "build" / "model", help="the served artifact (default: build/model)")
    p.add_argument(
        "--mar",
        type=Path,
        default=REPO / "model_store" / "classifier.mar",
        help="our archive (default: model_store/classifier.mar)",
    )
    p.add_argument(
        "--image-dir",
        type=Path,
        default=REPO / "build" / "loadtest_images",
        help="images to post; generated when missing (default: build/loadtest_images)",
    )
    p.add_argument(
        "--work-dir", type=Path, default=REPO / "build" / "bench", help="servers, archives, CSVs (default: build/bench)"
    )
    p.add_argument("--out-dir", type=Path, default=REPO / "docs", help="where benchmarks.md/.json/.png go (default: docs)")
    p.add_argument(
        "--photo-dir",
        type=Path,
        default=REPO / "build" / "loadtest_photos",
        help="12 MP photo-like JPEGs; generated when missing (default: build/loadtest_photos)",
    )
    p.add_argument("--photo-concurrency", type=int_list, default=[1, 16], help="users per level for the photos (default: 1,16)")
    p.add_argument(
        "--workload",
        type=workload_arg,
        action="append",
        default=[],
        help="NAME=DIR: another image set, measured like the photos (repeatable)",
    )
    p.add_argument("--only-photos", action="store_true", help="skip the raw model and the mixed images")
    p.add_argument(
        "--baseline-mar",
        type=Path,
        default=None,
        help="also serve this archive (e.g. built from an older commit) with our config, as 'baseline'",
    )
    p.add_argument("--skip", choices=SERVERS, action="append", default=[], help="leave out a server (repeatable)")
    return p


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds the `with` blocks, which stop the servers


def main(args: argparse.Namespace) -> dict:
    signal.signal(signal.SIGTERM, _terminate)
    for path in (args.model_dir / "model.pt2", args.mar):
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist; run `make archive` first")
    if not any(args.image_dir.rglob("*.png")):
        from loadtests.images import write_images

        print(f"writing load-test images to {args.image_dir}", flush=True)
        write_images(args.image_dir)
    if args.photo_concurrency and not any(args.photo_dir.glob("*.jpg")):
        from loadtests.images import write_photos

        print(f"writing photo-like JPEGs to {args.photo_dir}", flush=True)
        write_photos(args.photo_dir)
    images = sum(1 for p in args.image_dir.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    served_backend = archive_backend(args.mar)
    input_size = json.loads((args.model_dir / "metadata.json").read_text()).get("input_size", 224)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    started = dt.datetime.now().astimezone()

    if args.only_photos:
        backends = []
    levels = workload_levels(args)
    raw = [
        row
        for kind in backends
        for row in measure_raw(kind, args.model_dir, args.batch_sizes, args.raw_seconds, args.threads, input_size)
    ]

    served, handler = [], "image_classifier"
    if "ours" not in args.skip:
        overrides = loopback_overrides(args.mar.parent, f"classifier={args.mar.name}")
        with TorchServeProcess(REPO / "config.properties", args.work_dir / "ours", overrides, model="classifier") as ts:
            served += measure_server("ours", ts, "classifier", "ours", levels, args, args.work_dir / "ours" / "locust")
    if args.baseline_mar is not None:
        overrides = loopback_overrides(args.baseline_mar.parent, f"classifier={args.baseline_mar.name}")
        work = args.work_dir / "baseline"
        with TorchServeProcess(REPO / "config.properties", work, overrides, model="classifier") as ts:
            served += measure_server("baseline", ts, "classifier", "ours", levels, args, work / "locust")
    if "stock" not in args.skip:
        mar, handler = build_stock_archive(args.model_dir, args.work_dir / "stock")
        overrides = loopback_overrides(mar.parent, "stock=stock.mar")
        stock_server = TorchServeProcess(
            STOCK_DIR / "config.properties", args.work_dir / "stock" / "server", overrides, model="stock"
        )
        with stock_server as ts:
            served += measure_server("stock", ts, "stock", "stock", levels, args, args.work_dir / "stock" / "locust")

    report = {
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "command": shlex.join(["python", "-m", "benchmarks.bench", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "batch_sizes": args.batch_sizes,
            "raw_seconds": args.raw_seconds,
            "threads": args.threads,
            "backends": backends,
            "served_backend": served_backend,
            "input_size": input_size,
            "images": images,
            "stock_handler": Path(handler).name if handler != "image_classifier" else handler,
            "workloads": {name: display_path(path) for name, path in extra_workloads(args).items()},
            "photo_concurrency": args.photo_concurrency,
            "baseline_mar": str(args.baseline_mar) if args.baseline_mar else None,
        },
        "raw": raw,
        "served": served,
        "headline": headline(raw, served, served_backend),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "benchmarks.md").write_text(render_markdown(report))
    plot(report, args.out_dir / "benchmarks.png")
    print(f"wrote {args.out_dir / 'benchmarks.md'}, benchmarks.json, benchmarks.png")
    return report


def broken_levels(served: list[dict]) -> list[str]:
    """Levels that must not be published: a failed request, or no request completed."""
    return [
        f"{r['server']} c={r['concurrency']}: {r['failures']} failed of {r['requests']}"
        for r in served
        if r["failures"] or not r["requests"]
    ]


if __name__ == "__main__":
    broken = broken_levels(main(get_args_parser().parse_args())["served"])
    if broken:
        raise SystemExit("error: the report is written, but these levels are not a valid measurement: " + "; ".join(broken))
