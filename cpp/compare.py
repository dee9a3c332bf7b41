"""C++ vs Python: the same pipeline, stage by stage, on the same images and the same model.

    python -m cpp.compare --model-dir build/model --binary build/cpp/classify   (make cpp-report)
    python -m cpp.compare predict IMAGE --model-dir build/model --seed 42       (Python's one-shot answer)
    python -m cpp.compare render      (rewrite the page from the last run's docs/cpp-vs-python.json)

The Python side is the served path itself (``classifier.service``, as the handler loads it: JPEG region
decoding included), timed around the same four stages the C++ program (``cpp/``) times: decode (bytes
in memory -> upright RGB), preprocess (crop choice, zoom, crop, normalise, pad), network (OpenVINO
on ``model.int8.onnx``; a batch's time is shared by its images) and postprocess (softmax top-2,
embedding statistics). Reading the file and printing the answer are outside every stage on both sides.

The report, ``docs/cpp-vs-python.md`` and ``docs/cpp-vs-python.png``, comes from one run of this
module; its wording is ``cpp/templates/cpp-vs-python.md.j2``. The parity tests (tests/cpp/) use its
:func:`run_cpp` and :class:`PythonPipeline`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from benchmarks import reports
from classifier.service import ClassifierService, Prepared
from classifier.transforms import CropBox

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "templates"  # the page's prose: templates/cpp-vs-python.md.j2
STAGES = ("decode", "preprocess", "network", "postprocess")
# The backend the C++ program runs (OpenVINO on model.int8.onnx, cpp/src/pipeline.cpp), also the served default.
CPP_BACKEND = "openvino-int8"
PYTHON = "Python"
PYTHON_ONE_THREAD = "Python, torch 1 thread"


# --------------------------------------------------------------------------- the two pipelines


def run_cpp(
    binary: Path,
    images: list[Path],
    model_dir: Path | None = None,
    *,
    seed: int | None = None,
    box: CropBox | None = None,
    crop: str | None = None,
    batch: int = 1,
    repeat: int = 1,
    threads: int | None = None,
    timings: bool = False,
    network: bool = True,
    dump_pixels: Path | None = None,
    dump_tensor: Path | None = None,
) -> list[dict[str, Any]]:
    """Run the C++ program and return its JSON lines (one per image and pass, then a summary with --timings)."""
    cmd = [str(binary), *[str(p) for p in images], "--batch", str(batch), "--repeat", str(repeat)]
    if model_dir is not None:
        cmd += ["--model-dir", str(model_dir)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if box is not None:
        cmd += ["--box", ",".join(map(str, box.as_list()))]
    if crop is not None:
        cmd += ["--crop", crop]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if timings:
        cmd.append("--timings")
    if not network:
        cmd.append("--no-network")
    if dump_pixels is not None:
        cmd += ["--dump-pixels", str(dump_pixels)]
    if dump_tensor is not None:
        cmd += ["--dump-tensor", str(dump_tensor)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 1: some image was refused, its line says why
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@dataclass
class PythonPipeline:
    """The served path: :class:`classifier.service.ClassifierService` as the handler loads it, with the served
    model-config (region decoding of JPEGs included), each stage timed like the C++ program's.

    Only the backend is pinned, to the one the C++ program runs, so that both sides run the same network.
    """

    model_dir: Path
    threads: int

    def __post_init__(self) -> None:
        config = yaml.safe_load((REPO / "model-config.yaml").read_text())
        self.service = ClassifierService.load(self.model_dir, config, backend=CPP_BACKEND, threads=self.threads)

    def run(self, blobs: list[bytes], batch: int, seed: int) -> list[dict[str, Any]]:
        """Answers for ``blobs`` in batches of ``batch``, each with ``timings_ms`` per stage.

        decode and preprocess are the service's own split of :meth:`ClassifierService.prepare`; the network and
        postprocessing times of a batch are shared by its images.
        """
        answers = []
        for first in range(0, len(blobs), batch):
            items, timings = [], []
            for data in blobs[first : first + batch]:
                t = time.perf_counter()
                item = self.service.prepare(data, seed)
                total = (time.perf_counter() - t) * 1e3
                decode = item.decode_seconds * 1e3 if isinstance(item, Prepared) else total
                items.append(item)
                timings.append({"decode": decode, "preprocess": total - decode})
            t = time.perf_counter()
            outputs = self.service.predict(items)
            network = (time.perf_counter() - t) * 1e3 / len(items)
            t = time.perf_counter()
            encoded = self.service.encode(items, outputs)
            postprocess = (time.perf_counter() - t) * 1e3 / len(items)
            for answer, timing in zip(encoded, timings, strict=True):
                answers.append({**answer.body, "timings_ms": {**timing, "network": network, "postprocess": postprocess}})
        return answers


# --------------------------------------------------------------------------- images


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth shapes and gradients plus sensor-like noise: as hard on a JPEG codec as a real photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = x / width, y / height
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6, 2).tolist() + [rng.uniform(0, 6.3)]
        base = 128 + 60 * np.sin(2 * np.pi * fx * x + phase) * np.cos(2 * np.pi * fy * y) + 40 * (x - y)
        channels.append(base + rng.normal(0, 12, (height, width)).astype(np.float32))
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8), "RGB")


# name: (width, height, format, save options)
IMAGE_KINDS: dict[str, tuple[int, int, str, dict]] = {
    "small JPEG 320x240 q90": (320, 240, "JPEG", {"quality": 90}),
    "PNG 640x480": (640, 480, "PNG", {}),
    "12 MP JPEG 4000x3000 q90": (4000, 3000, "JPEG", {"quality": 90}),
}


def make_images(folder: Path, per_kind: int) -> dict[str, list[Path]]:
    """``per_kind`` different photo-like images of each kind (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {}
    for k, (name, (w, h, fmt, options)) in enumerate(IMAGE_KINDS.items()):
        paths = []
        for i in range(per_kind):
            path = folder / f"kind{k}_{i}.{fmt.lower()}"
            if not path.exists():
                photo_like(w, h, seed=100 * k + i).save(path, fmt, **options)
            paths.append(path)
        out[name] = paths
    return out


# --------------------------------------------------------------------------- measurements


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def stage_summary(answers: list[dict[str, Any]]) -> dict[str, float]:
    """Median ms per image for each stage, and the end-to-end p50/p90 and images/s."""
    per_stage = {s: statistics.median(a["timings_ms"][s] for a in answers) for s in STAGES}
    totals = [sum(a["timings_ms"][s] for s in STAGES) for a in answers]
    return {
        **per_stage,
        "total_p50": percentile(totals, 50),
        "total_p90": percentile(totals, 90),
        "images_per_s": 1e3 * len(totals) / sum(totals),
    }


def cold_start(cmd: list[str], runs: int) -> tuple[float, dict[str, Any]]:
    """Median wall time from spawning ``cmd`` to its exit after printing the first answer."""
    times, answer = [], {}
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        times.append(time.perf_counter() - t)
        answer = json.loads(proc.stdout.splitlines()[0])
    return statistics.median(times), answer


def loaded_libraries(cmd: list[str]) -> list[Path]:
    """Every shared library the dynamic loader initialises for ``cmd``, dlopen()ed plugins included."""
    env = {**os.environ, "LD_DEBUG": "libs"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    libs = {line.split("calling init:", 1)[1].strip() for line in proc.stderr.splitlines() if "calling init:" in line}
    return sorted({Path(p).resolve() for p in libs if Path(p).exists()})


def mib(nbytes: float) -> float:
    return nbytes / 2**20


def tree_size(path: Path, skip: str = "") -> int:
    if path.is_file():
        return path.stat().st_size
    files = (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return sum(p.stat().st_size for p in files if not (skip and skip in p.parts))


def imported_distributions() -> dict[str, int]:
    """Installed size of every pip distribution this process has imported from (the pipeline's needs)."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    used = {owner for name in list(sys.modules) for owner in owners.get(name.split(".")[0], [])}
    sizes = {}
    for dist in sorted(used):
        files = metadata.distribution(dist).files or []
        sizes[dist] = sum(f.locate().stat().st_size for f in files if Path(f.locate()).is_file())
    return sizes


def footprint(binary: Path, python_cmd: list[str], cpp_cmd: list[str]) -> dict[str, Any]:
    cpp_libs = loaded_libraries(cpp_cmd)
    py_libs = loaded_libraries(python_cmd)
    system = [p for p in cpp_libs if str(p).startswith(("/lib", "/usr/lib"))]
    wheel = [p for p in cpp_libs if p not in system]
    stdlib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    venv = Path(sys.prefix)
    return {
        "cpp_binary": binary.stat().st_size,
        "cpp_wheel_libs": {p.name: p.stat().st_size for p in wheel},
        "cpp_system_libs": {p.name: p.stat().st_size for p in system},
        "cpp_wheel_unused": tree_size(wheel[0].parent) - sum(p.stat().st_size for p in wheel) if wheel else 0,
        "python_loaded_libs": sum(p.stat().st_size for p in py_libs),
        "python_loaded_lib_count": len(py_libs),
        "python_distributions": imported_distributions(),
        "python_stdlib": tree_size(stdlib, skip="site-packages") if stdlib.exists() else 0,
        "python_venv": tree_size(venv / "lib"),
    }


def agreement(cpp: list[dict[str, Any]], py: list[dict[str, Any]]) -> dict[str, float]:
    """Largest C++/Python differences over answers for the same images and crops."""
    out = {"labels_equal": 1.0, "probability": 0.0, "mean": 0.0, "variance": 0.0}
    for c, p in zip(cpp, py, strict=True):
        if [x["index"] for x in c["predictions"]] != [x["index"] for x in p["predictions"]]:
            out["labels_equal"] = 0.0
        for x, y in zip(c["predictions"], p["predictions"], strict=True):
            out["probability"] = max(out["probability"], abs(x["probability"] - y["probability"]))
        for key in ("mean", "variance"):
            out[key] = max(out[key], abs(c["embedding"][key] - p["embedding"][key]) / max(abs(p["embedding"][key]), 1e-12))
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    images = make_images(args.image_dir, args.per_kind)
    pipeline = PythonPipeline(args.model_dir, args.threads)
    rows, checks = [], {}
    for kind, paths in images.items():
        blobs = [p.read_bytes() for p in paths]
        for batch in args.batches:
            # C++ and Python alternate per configuration, so drifting machine load hits both alike.
            # Each side's first pass over the images is a warm-up and is dropped.
            lines = run_cpp(
                args.binary,
                paths,
                args.model_dir,
                seed=args.seed,
                batch=batch,
                repeat=args.repeat + 1,
                threads=args.threads,
                timings=True,
            )
            cpp = [line for line in lines if "timings_ms" in line][len(paths) :]
            rows.append({"kind": kind, "batch": batch, "language": "C++", **stage_summary(cpp)})
            for language, torch_threads in ((PYTHON, args.threads), (PYTHON_ONE_THREAD, 1)):
                # The server sets torch's threads to the inference threads; the second variant shows
                # what preprocessing costs when torch's OpenMP pool cannot collide with OpenVINO's.
                torch.set_num_threads(torch_threads)
                pipeline.run(blobs, batch, args.seed)
                py = [a for _ in range(args.repeat) for a in pipeline.run(blobs, batch, args.seed)]
                rows.append({"kind": kind, "batch": batch, "language": language, **stage_summary(py)})
                if language == PYTHON:
                    checks[f"{kind}, batch {batch}"] = agreement(cpp[-len(paths) :], py[-len(paths) :])
            torch.set_num_threads(args.threads)
            print(f"{kind} batch {batch}: " + ", ".join(f"{r['language']} {r['images_per_s']:.1f} img/s" for r in rows[-3:]))
    small = images[next(iter(IMAGE_KINDS))][0]
    common = ["--model-dir", str(args.model_dir), "--seed", str(args.seed), "--threads", str(args.threads)]
    cpp_cmd = [str(args.binary), str(small), *common]
    py_cmd = [sys.executable, "-m", "cpp.compare", "predict", str(small), *common]
    cold = {}
    for language, cmd in (("C++", cpp_cmd), ("Python", py_cmd)):
        seconds, answer = cold_start(cmd, args.cold_runs)
        cold[language] = {"seconds": seconds, "answer": answer}
    return {
        "rows": rows,
        "agreement": checks,
        "cold_start": cold,
        "footprint": footprint(args.binary, py_cmd, cpp_cmd),
        "machine": machine_description(),
        "threads": args.threads,
        "batches": args.batches,
        "repeat": args.repeat,
        "cold_runs": args.cold_runs,
        "per_kind": args.per_kind,
        "model": model_description(args.model_dir),
        "versions": versions(),
        "command": " ".join(["python -m cpp.compare", *sys.argv[1:]]),
    }


def machine_description() -> str:
    """The benchmarks' machine record (benchmarks.running.machine), in one line."""
    from benchmarks.running import machine

    m = machine()
    return f"{m['cpu']}, {os.cpu_count()} cores visible, {m['os']}"


def model_description(model_dir: Path) -> str:
    meta = json.loads((model_dir / "metadata.json").read_text())
    return f"{model_dir} ({meta.get('arch', '?')}, {meta.get('num_classes', '?')} classes, model.int8.onnx)"


def versions() -> dict[str, str]:
    import openvino
    import PIL
    from PIL import features

    debian = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "libjpeg62-turbo", "libpng16-16"], capture_output=True, text=True
    ).stdout
    return {
        "OpenVINO (pip wheel, both sides)": openvino.__version__.split("-")[0],
        "Pillow": PIL.__version__,
        "libjpeg-turbo in Pillow's wheel": str(features.version("libjpeg_turbo")),
        "libjpeg-turbo + libpng from Debian (C++)": debian or "?",
        "torch": torch.__version__,
        "Python": platform.python_version(),
    }


# --------------------------------------------------------------------------- report


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in results["rows"]})
    fig, axes = plt.subplots(1, len(batches) + 1, figsize=(5 * (len(batches) + 1), 4.5))
    colours = dict(zip(STAGES, ("#4c72b0", "#dd8452", "#55a868", "#c44e52"), strict=True))
    for ax, batch in zip(axes, batches, strict=False):
        rows = [r for r in results["rows"] if r["batch"] == batch]
        short = {"C++": "C++", PYTHON: "Py", PYTHON_ONE_THREAD: "Py 1T"}
        kind_short = dict(zip(IMAGE_KINDS, ("small", "PNG", "12MP"), strict=True))
        names = [f"{short[r['language']]}\n{kind_short[r['kind']]}" for r in rows]
        bottom = np.zeros(len(rows))
        for stage in STAGES:
            values = np.array([r[stage] for r in rows])
            ax.bar(range(len(rows)), values, bottom=bottom, color=colours[stage], label=stage)
            bottom += values
        ax.set_xticks(range(len(rows)), names, fontsize=6)
        ax.set_ylabel("ms per image (median per stage)")
        ax.set_title(f"batch {batch}")
        ax.legend(fontsize=8)
    cold = results["cold_start"]
    ax = axes[-1]
    ax.bar(list(cold), [cold[k]["seconds"] for k in cold], color=["#8172b3", "#937860"])
    ax.set_ylabel("seconds")
    ax.set_title("cold start to first answer")
    fig.suptitle(f"C++ vs Python, same model and images ({results['threads']} threads; Py 1T: torch on one thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(results: dict[str, Any], plot_name: str) -> str:
    """docs/cpp-vs-python.md (templates/cpp-vs-python.md.j2) from a run's results (see :func:`measure`).

    Python computes what the page quotes (ratios, ranges, sizes in MiB); every sentence is in the template.
    """
    rows, fp, cold = results["rows"], results["footprint"], results["cold_start"]

    def speedup(cpp: dict[str, Any], language: str) -> dict[str, Any]:
        # Per stage Python time / C++ time; for throughput C++ images/s / Python's, so above 1 is C++ ahead in both.
        py = find_row(rows, cpp["kind"], cpp["batch"], language)
        return {
            "kind": cpp["kind"],
            "batch": cpp["batch"],
            **{s: py[s] / cpp[s] for s in STAGES},
            "images_per_s": cpp["images_per_s"] / py["images_per_s"],
        }

    def spread(values: list[float]) -> dict[str, float]:
        return {"low": min(values), "high": max(values)}

    def batch_one(kind: str) -> dict[str, dict[str, Any]]:
        return {
            "cpp": find_row(rows, kind, 1, "C++"),
            "python": find_row(rows, kind, 1, PYTHON),
            "python_one_thread": find_row(rows, kind, 1, PYTHON_ONE_THREAD),
        }

    cpp_rows = [r for r in rows if r["language"] == "C++"]
    speedups = [speedup(r, PYTHON) for r in cpp_rows]
    one_thread = [speedup(r, PYTHON_ONE_THREAD) for r in cpp_rows]
    small, png, big = (batch_one(kind) for kind in IMAGE_KINDS)
    dists = fp["python_distributions"]
    cpp_wheel, cpp_system = sum(fp["cpp_wheel_libs"].values()), sum(fp["cpp_system_libs"].values())
    disk = {
        "cpp_binary": mib(fp["cpp_binary"]),
        "cpp_wheel": mib(cpp_wheel),
        "cpp_wheel_libs": sorted(fp["cpp_wheel_libs"]),
        "cpp_system": mib(cpp_system),
        "cpp_system_libs": len(fp["cpp_system_libs"]),
        "cpp_total": mib(fp["cpp_binary"] + cpp_wheel + cpp_system),
        "cpp_wheel_unused": mib(fp["cpp_wheel_unused"]),
        "python_loaded": mib(fp["python_loaded_libs"]),
        "python_loaded_libs": fp["python_loaded_lib_count"],
        "python_distributions": list(dists),
        "python_distributions_size": mib(sum(dists.values())),
        "python_stdlib": mib(fp["python_stdlib"]),
        "python_total": mib(sum(dists.values()) + fp["python_stdlib"]),
        "torch": mib(dists.get("torch", 0)),
        "venv": mib(fp["python_venv"]),
        "largest": [(name, mib(size)) for name, size in sorted(dists.items(), key=lambda kv: -kv[1])[:5]],
    }
    return reports.render(
        "cpp-vs-python.md.j2",
        folder=TEMPLATES,
        **{
            k: results[k]
            for k in ("command", "machine", "model", "threads", "per_kind", "repeat", "cold_runs", "versions", "agreement")
        },
        plot_name=plot_name,
        rows=rows,
        speedups=speedups,
        cold={
            side: {"seconds": cold[language]["seconds"], "predictions": json.dumps(cold[language]["answer"]["predictions"])}
            for side, language in (("cpp", "C++"), ("python", "Python"))
        },
        disk=disk,
        network=spread([s["network"] for s in speedups]),
        network_one_thread={
            **spread([s["network"] for s in one_thread]),
            "worst": max(one_thread, key=lambda s: s["network"]),
        },
        preprocess=spread([r["preprocess"] for r in rows if r["language"] == PYTHON]),
        preprocess_one_thread=spread([r["preprocess"] for r in rows if r["language"] == PYTHON_ONE_THREAD]),
        small=small,
        png=png,
        big=big,
        big_speedup=big["cpp"]["images_per_s"] / big["python"]["images_per_s"],
    )


def find_row(rows: list[dict[str, Any]], kind: str, batch: int, language: str) -> dict[str, Any]:
    return next(r for r in rows if r["kind"] == kind and r["batch"] == batch and r["language"] == language)


def predict(args: argparse.Namespace) -> None:
    """One image, one answer: what a Python process must do before its first response."""
    pipeline = PythonPipeline(args.model_dir, args.threads)
    answer = pipeline.run([args.image.read_bytes()], 1, args.seed)[0]
    answer.pop("timings_ms")
    print(json.dumps(answer))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="report", choices=("report", "predict", "render"), help="default: report")
    parser.add_argument("image", nargs="?", type=Path, help="predict: the image file")
    parser.add_argument("--model-dir", type=Path, default=Path("build/model"), help="default: build/model")
    parser.add_argument("--binary", type=Path, default=Path("build/cpp/classify"), help="default: build/cpp/classify")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="both sides; default: min(2, cores)")
    parser.add_argument("--seed", type=int, default=42, help="crop seed, both sides; default: 42")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="default: 1 8")
    parser.add_argument("--per-kind", type=int, default=8, help="different images per kind; default: 8")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the images; default: 3")
    parser.add_argument("--cold-runs", type=int, default=3, help="default: 3")
    parser.add_argument(
        "--image-dir", type=Path, default=Path("build/cpp-report-images"), help="default: build/cpp-report-images"
    )
    parser.add_argument("--output", type=Path, default=Path("docs/cpp-vs-python.md"), help="default: docs/cpp-vs-python.md")
    return parser


def main(args: argparse.Namespace) -> None:
    if args.command == "predict":
        if args.image is None:
            raise SystemExit("predict needs an image file")
        predict(args)
        return
    if args.command == "render":  # re-render the page from a run's saved numbers, without measuring again
        results = json.loads(args.output.with_suffix(".json").read_text())
    elif not args.binary.exists():
        raise SystemExit(f"{args.binary} does not exist; build it with `make cpp`")
    else:
        results = measure(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    plot_path = args.output.with_suffix(".png")
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, plot_path)
    args.output.write_text(render(results, plot_path.name))
    print(f"wrote {args.output}, {plot_path} and {args.output.with_suffix('.json')}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
