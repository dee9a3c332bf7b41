"""Offline `python -m cli predict` against the server, on one folder of mixed images, same archive, same machine.

    make cli-bench                                    # python -m benchmarks.cli_bench --mar model_store/classifier.mar
    python -m benchmarks.cli_bench --mar model_store/classifier.mar --images 60 --rounds 1 --out build/cli.md   # a quick check

1. Writes ``--images`` generated images (loadtests.images: PNG and JPEG, 1 in 7 of 800-1600 px, the rest 64-320 px).
2. Starts a private TorchServe on free loopback ports serving the archive with its own model-config
   (batchSize, maxBatchDelay, backend), as ``make serve`` would.
3. ``--rounds`` times, alternating: the command-line predictor on the folder (a subprocess, with the archive
   and its defaults), then ``--clients`` closed-loop HTTP clients posting every image of the folder once.
   Both use seed 1, so their top-1 labels can be compared file by file.

Writes ``--out`` (default docs/cli.md). Every server it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import yaml

from benchmarks import reports
from benchmarks.running import machine
from classifier.settings import HandlerSettings
from loadtests.images import write_images
from serving.launcher import REPO, TorchServeProcess, loopback_overrides
from training import synthetic

SEED = "1"
SUMMARY = re.compile(r"(\d+) images, (\d+) failed, ([\d.]+) s, ([\d.]+) images/s \(backend ([\w-]+)")


def mix(total: int) -> tuple[int, int]:
    """Small and large images per class for ``total`` images, in loadtests.images's 6:1 mix."""
    per_class = max(1, total // len(synthetic.CLASSES))
    large = max(1, round(per_class / 7))
    return per_class - large, large


def run_cli(images: Path, mar: Path, out: Path) -> dict:
    argv = [sys.executable, "-m", "cli", "predict", str(images), "--mar", str(mar), "--seed", SEED, "--output", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    match = SUMMARY.search(proc.stderr)
    if proc.returncode not in (0, 1) or not match:
        raise RuntimeError(f"the predictor failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    count, failed, seconds, _, backend = match.groups()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return {
        "images": int(count),
        "failed": int(failed),
        "seconds": float(seconds),
        "wall_s": wall,
        "backend": backend,
        "top1": {line["path"]: line["predictions"][0]["label"] for line in lines if "predictions" in line},
    }


def run_clients(url: str, files: list[Path], clients: int) -> dict:
    """Every file posted once by ``clients`` closed-loop clients sharing one queue; wall time first request to last answer."""
    bodies = [(str(p), p.read_bytes()) for p in files]
    lock, position, top1, failed = threading.Lock(), [0], {}, [0]

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                if position[0] >= len(bodies):
                    return
                path, body = bodies[position[0]]
                position[0] += 1
            resp = session.post(url, data=body, headers={"X-Seed": SEED}, timeout=120)
            with lock:
                if resp.status_code == 200:
                    top1[path] = resp.json()["predictions"][0]["label"]
                else:
                    failed[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"images": len(bodies), "failed": failed[0], "seconds": time.perf_counter() - start, "top1": top1}


def agreement(a: dict[str, str], b: dict[str, str]) -> tuple[int, int]:
    common = set(a) & set(b)
    return sum(a[p] == b[p] for p in common), len(common)


def render(report: dict) -> str:
    """docs/cli.md (templates/cli.md.j2): each round's rates and their ratio, from the report of :func:`main`."""
    rounds = []
    for r in report["rounds"]:
        cli, srv = r["cli"], r["server"]
        rates = {
            "cli_rate": cli["images"] / cli["seconds"],
            "cli_command_rate": cli["images"] / cli["wall_s"],
            "server_rate": srv["images"] / srv["seconds"],
        }
        rounds.append({**r, **rates, "cli_over_server": rates["cli_rate"] / rates["server_rate"]})
    small, large = report["mix"]
    return reports.render(
        "cli.md.j2",
        **{k: report[k] for k in ("date", "model", "arch", "backend", "model_config", "note", "command", "images", "clients")},
        m=report["machine"],
        small=small,
        large=large,
        rounds=rounds,
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mar", type=Path, default=REPO / "model_store" / "classifier.mar", help="the archive both serve (default: %(default)s)"
    )
    parser.add_argument("--images", type=int, default=500, help="images in the folder (default: 500)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (default: 4)")
    parser.add_argument("--rounds", type=int, default=2, help="CLI-then-server rounds (default: 2)")
    parser.add_argument(
        "--work-dir", type=Path, default=REPO / "build" / "cli-bench", help="images and server files (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "cli.md", help="report (default: docs/cli.md)")
    parser.add_argument("--note", default="", help="a sentence for the report, e.g. what else ran on the machine")
    parser.add_argument("--reproduce", help="the command line to print under Reproduce (default: how this run was started)")
    return parser


def main(args: argparse.Namespace) -> dict:
    import zipfile

    mar = args.mar.resolve()
    work = args.work_dir.resolve()
    images = work / "images"
    small, large = mix(args.images)
    if not images.exists() or len([p for p in images.rglob("*") if p.is_file()]) != len(synthetic.CLASSES) * (small + large):
        images.mkdir(parents=True, exist_ok=True)
        for old in images.rglob("*.*"):
            old.unlink()
        write_images(images, per_class=small, large_per_class=large)
    files = sorted(p for p in images.rglob("*") if p.is_file())
    with zipfile.ZipFile(mar) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        model_config = yaml.safe_load(archive.read(manifest["model"]["configFile"]))
        arch = json.loads(archive.read("metadata.json")).get("arch", "?")
    archived_backend = (model_config.get("handler") or {}).get("backend", HandlerSettings.backend)
    print(f"{len(files)} images in {images}; archive {mar} ({arch}, backend {archived_backend})", flush=True)

    rounds = []
    store = mar.parent
    overrides = loopback_overrides(store, f"classifier={mar.name}")
    with TorchServeProcess(REPO / "config.properties", work / "server", overrides) as ts:
        url = f"{ts.inference_url}/predictions/classifier"
        for path in files[:8]:  # warm the frontend connections and the worker, as a running server is
            requests.post(url, data=path.read_bytes(), timeout=120)
        for n in range(1, args.rounds + 1):
            cli = run_cli(images, mar, work / f"cli-{n}.jsonl")
            print(
                f"round {n}: CLI {cli['images'] / cli['seconds']:.1f} images/s ({cli['wall_s']:.1f} s whole command)", flush=True
            )
            server = run_clients(url, files, args.clients)
            print(f"round {n}: server {server['images'] / server['seconds']:.1f} images/s", flush=True)
            rounds.append({"round": n, "cli": cli, "server": server, "agree": agreement(cli["top1"], server["top1"])})
    backend = rounds[0]["cli"]["backend"]
    try:
        shown = mar.relative_to(REPO)
    except ValueError:
        shown = mar
    report = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "model": str(shown),
        "arch": arch,
        "backend": backend,
        "model_config": model_config,
        "images": len(files),
        "mix": (small, large),
        "clients": args.clients,
        "rounds": [
            {
                **r,
                "cli": {k: v for k, v in r["cli"].items() if k != "top1"},
                "server": {k: v for k, v in r["server"].items() if k != "top1"},
            }
            for r in rounds
        ],
        "note": args.note,
        "command": args.reproduce
        or (
            "make cli-bench"
            if mar == (REPO / "model_store" / "classifier.mar").resolve()
            else f"python -m benchmarks.cli_bench --mar {shown}"
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(report))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
