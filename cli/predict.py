"""Classify image files offline, with the served model and the server's own code: no TorchServe.

    python -m cli predict PATH... [--mar FILE | --model-dir DIR] [--backend NAME]
                                 [--seed N | --center] [--batch-size N] [--workers N]
                                 [--format jsonl|csv|table] [--output FILE] [--quiet]

A PATH is a file, a folder (searched recursively for image files) or a glob pattern. Every
answer is the server's JSON for that image plus its ``path``; a file the server would refuse
gets the server's error body (code, type, message) plus its path, the others go on, and the
exit status is 1 if any file failed (2 for a usage error).

Seeds: ``--seed N`` crops every file with seed N, so each line equals the server's answer to
that file sent with ``X-Seed: N``. Without it each file draws its own seed, reported in
``crop.seed`` as the server reports it, so any line can be replayed against the server.

The model is ``build/model`` (what ``make train`` writes) unless ``--model-dir`` or ``--mar``
names another. A ``.mar`` is unpacked to a temporary folder and its archived model-config
(backend, crop mode, limits) applies; a model folder takes them from ``--model-config``
(default: the repository's model-config.yaml, the one ``make archive`` packs).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
import yaml
from PIL import Image

from classifier.backends import BACKENDS
from classifier.service import ClassifierService, Item, ItemError, check_body_size, parse_seed
from classifier.settings import usable_cpus
from classifier.versions import ModelIdentity, model_identity

logger = logging.getLogger("cli.predict")

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "classifier"
DEFAULT_MODEL_DIR = Path("build/model")
DEFAULT_MODEL_CONFIG = REPO / "model-config.yaml"
FORMATS = ("jsonl", "csv", "table")
EXIT_FAILED, EXIT_USAGE = 1, 2


# ---------------------------------------------------------------- inputs


def image_suffixes() -> frozenset[str]:
    """File suffixes Pillow can open (``.png``, ``.jpg``, ``.webp``, ...), lower case."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def folder_images(folder: Path, suffixes: frozenset[str]) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders are skipped."""
    found = []
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.suffix.lower() in suffixes and path.is_file():
            found.append(path)
    return sorted(found)


def collect_paths(args: Sequence[str], suffixes: frozenset[str] | None = None) -> tuple[list[Path], list[str]]:
    """The files to classify, in argument order without repeats, and the arguments that matched nothing.

    A file named on the command line is always taken (if it is not an image, its line says so);
    a folder, or a folder a glob matched, contributes only the image files under it.
    """
    suffixes = image_suffixes() if suffixes is None else suffixes
    files: dict[Path, None] = {}  # an ordered set
    unmatched = []
    for arg in args:
        path = Path(arg)
        if path.exists():
            matches = [path]
        elif glob.has_magic(arg):
            matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
        else:
            matches = []
        found = [file for match in matches for file in (folder_images(match, suffixes) if match.is_dir() else [match])]
        files.update(dict.fromkeys(found))
        if not found:
            unmatched.append(arg)
    return list(files), unmatched


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Model:
    folder: Path
    config: dict[str, Any]  # the model-config (TorchServe keys and the handler: section)
    source: str  # what the user named, for messages
    identity: ModelIdentity  # the name and version every answer reports, as the server would
    drift: tuple[str, ...] = ()  # core modules whose archived copy differs from the one running here


def mar_config_name(mar: zipfile.ZipFile) -> str | None:
    manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    return manifest.get("model", {}).get("configFile")


def core_drift(archived: Path) -> tuple[str, ...]:
    """Names of the archive's classifier/*.py files that differ from this checkout's.

    The CLI runs this checkout's core; the server runs the archived one. A difference can change an answer.
    """
    return tuple(
        sorted(
            f.name for f in archived.glob("*.py") if (CORE / f.name).exists() and f.read_bytes() != (CORE / f.name).read_bytes()
        )
    )


def identity_of(folder: Path, source: str) -> ModelIdentity:
    """The name and version TorchServe would answer with: a .mar's manifest, else the model folder's version."""
    try:
        return model_identity(folder)
    except ValueError as exc:
        raise SystemExit(f"error: {source}: {exc}") from None


@contextmanager
def open_model(model_dir: Path | None, mar: Path | None, model_config: Path | None) -> Iterator[Model]:
    """The model folder and its model-config, from a ``.mar`` (unpacked to a temporary folder) or a folder."""
    if mar is not None:
        if not mar.is_file():
            raise SystemExit(f"error: no such model archive: {mar} (make archive writes model_store/classifier.mar)")
        if not zipfile.is_zipfile(mar):
            raise SystemExit(
                f"error: {mar} is not a model archive (.mar, a zip file); make archive writes model_store/classifier.mar"
            )
        with tempfile.TemporaryDirectory(prefix="classifier-mar-") as tmp, zipfile.ZipFile(mar) as archive:
            archive.extractall(tmp)
            folder, name = Path(tmp), mar_config_name(archive)
            config = yaml.safe_load((folder / name).read_text()) if model_config is None and name else None
            if model_config is not None:
                config = yaml.safe_load(model_config.read_text())
            yield Model(folder, config or {}, str(mar), identity_of(folder, str(mar)), core_drift(folder / "classifier"))
        return
    folder = model_dir if model_dir is not None else DEFAULT_MODEL_DIR
    if not (folder / "metadata.json").exists():
        hint = "run `make train`, or pass --model-dir DIR or --mar FILE" if model_dir is None else "expected make train's output"
        raise SystemExit(f"error: no model in {folder} (no metadata.json): {hint}")
    config_path = model_config if model_config is not None else DEFAULT_MODEL_CONFIG
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    yield Model(folder, config or {}, str(folder), identity_of(folder, str(folder)))


# ---------------------------------------------------------------- one batch


@dataclass(frozen=True)
class Result:
    path: str
    code: int  # the HTTP status the server answers with: 200, or the error's
    body: dict[str, Any]  # the server's JSON body: the answer, or {"code", "type", "message"}


def prepare_file(path: Path, service: ClassifierService, seed: int | None) -> Item:
    """Read one file and prepare it as the server prepares one request body (:meth:`ClassifierService.prepare`)."""
    try:
        # Refused from its size alone, as the server refuses a body, before a byte of it is read.
        check_body_size(path.stat().st_size, service.settings.max_body_bytes)
        data = path.read_bytes()
    except ItemError as exc:
        return exc
    except OSError as exc:  # no server ever sees this file, so there is no server message to match
        return ItemError(f"cannot read the file: {exc.strerror or exc}")
    return service.prepare(data, seed)


def answer_batch(paths: Sequence[Path], items: Sequence[Item], service: ClassifierService) -> list[Result]:
    """One backend call for the batch's good items, then each file's answer or error, in order."""
    return [Result(str(path), answer.code, answer.body) for path, answer in zip(paths, service.answer(items), strict=True)]


def predict_files(
    paths: Sequence[Path],
    prepare: Callable[[Path], Item],
    answer: Callable[[Sequence[Path], list], list[Result]],
    batch_size: int,
    pool: ThreadPoolExecutor,
) -> Iterator[Result]:
    """Results in input order, ``batch_size`` files per backend call.

    The next batch decodes on the pool while the current one runs through the model, and only
    two batches are held at a time, so memory does not grow with the number of files.
    """
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]

    def submit(batch: Sequence[Path]) -> list[Future]:
        return [pool.submit(prepare, path) for path in batch]

    pending = submit(batches[0]) if batches else []
    for index, batch in enumerate(batches):
        items = [future.result() for future in pending]
        pending = submit(batches[index + 1]) if index + 1 < len(batches) else []
        yield from answer(batch, items)


# ---------------------------------------------------------------- output


def jsonl_line(result: Result) -> str:
    """The server's JSON body with the file's path first."""
    return json.dumps({"path": result.path, **result.body})


def csv_header(topk: int) -> list[str]:
    ranked = [f"{name}_{rank}" for rank in range(1, topk + 1) for name in ("label", "index", "probability")]
    return [
        "path",
        "code",
        *ranked,
        "embedding_mean",
        "embedding_variance",
        "embedding_dim",
        "crop_mode",
        "crop_seed",
        "crop_box",
        "error",
        # Added last, so that the columns before keep their positions for readers that count them.
        "model_name",
        "model_version",
    ]


def csv_row(result: Result, topk: int) -> list[Any]:
    body = result.body
    if result.code != 200:
        return [result.path, result.code, *[""] * (3 * topk + 6), body["message"], "", ""]
    ranked = []
    for rank in range(topk):
        pred = body["predictions"][rank] if rank < len(body["predictions"]) else {}
        ranked += [pred.get("label", ""), pred.get("index", ""), pred.get("probability", "")]
    emb, crop = body["embedding"], body["crop"]
    seed = "" if crop["seed"] is None else crop["seed"]
    box = " ".join(str(v) for v in crop["box"])
    model = body["model"]
    summary = [emb["mean"], emb["variance"], emb["dim"], crop["mode"], seed, box, ""]
    return [result.path, 200, *ranked, *summary, model["name"], model["version"]]


def table_lines(results: Sequence[Result], topk: int) -> list[str]:
    """Aligned columns for a person: the path, each top-k label with its probability, and the crop seed."""
    header = ["PATH", *[f"TOP-{rank}" for rank in range(1, topk + 1)], "SEED"]
    rows = []
    for r in results:
        if r.code != 200:
            rows.append([r.path, f"error {r.code}: {r.body['message']}"])
            continue
        preds = [f"{p['label']} {p['probability']:.3f}" for p in r.body["predictions"]]
        seed = r.body["crop"]["seed"]
        rows.append([r.path, *preds, *[""] * (topk - len(preds)), "-" if seed is None else str(seed)])
    widths = [
        max(len(row[col]) for row in [header, *rows] if col < len(row) and len(row) == len(header)) for col in range(len(header))
    ]
    lines = []
    for row in [header, *rows]:
        if len(row) != len(header):  # an error line: the message runs on after the path
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip())
    return lines


class Writer:
    """Writes results as they come (jsonl, csv) or all at the end (table, whose columns need every row)."""

    def __init__(self, out: TextIO, fmt: str, topk: int):
        self.out, self.fmt, self.topk = out, fmt, topk
        self.held: list[Result] = []
        self.csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(csv_header(topk))

    def write(self, results: Iterable[Result]) -> None:
        for result in results:
            if self.fmt == "jsonl":
                self.out.write(jsonl_line(result) + "\n")
            elif self.csv:
                self.csv.writerow(csv_row(result, self.topk))
            else:
                self.held.append(result)
        self.out.flush()

    def close(self) -> None:
        if self.held:
            self.out.write("\n".join(table_lines(self.held, self.topk)) + "\n")
        self.out.flush()


def choose_format(requested: str | None, output: Path | None, stdout_is_tty: bool) -> str:
    """``--format`` if given; else from the output file's suffix; else a table for a terminal and jsonl for a pipe."""
    if requested:
        return requested
    if output is not None:
        return {".csv": "csv", ".txt": "table"}.get(output.suffix.lower(), "jsonl")
    return "table" if stdout_is_tty else "jsonl"


# ---------------------------------------------------------------- command line


def seed_value(text: str) -> int | None:
    """--seed, refused with the server's own message for a bad X-Seed."""
    try:
        return parse_seed(text)
    except ItemError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or glob patterns ('imgs/**/*.jpg')"
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-dir", type=Path, help=f"a model folder as make train writes it (default: {DEFAULT_MODEL_DIR})")
    model.add_argument(
        "--mar", type=Path, help="a model archive (make archive's model_store/classifier.mar); its model-config applies"
    )
    parser.add_argument(
        "--model-config",
        type=Path,
        help="model-config.yaml whose handler: section applies (default: the .mar's own, else the repository's)",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="inference backend (default: the model-config's handler.backend)")
    crop = parser.add_mutually_exclusive_group()
    crop.add_argument(
        "--seed",
        type=seed_value,
        help="crop every file with this seed, as the server does for X-Seed: N (default: a random seed per file)",
    )
    crop.add_argument("--center", action="store_true", help="centre crop instead of the model-config's crop_mode (no seed)")
    parser.add_argument(
        "--batch-size", type=positive, default=8, help="images per backend call (default: 8, the server's batchSize)"
    )
    parser.add_argument(
        "--workers", type=positive, default=usable_cpus(), help="threads decoding images (default: one per usable core)"
    )
    parser.add_argument(
        "--threads", type=positive, help="inference threads (default: as the server: cores / model-config minWorkers)"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the eager backend, e.g. cuda:0 (default: cpu)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: table on a terminal, else jsonl; .csv/.txt --output picks csv/table)",
    )
    parser.add_argument("--output", type=Path, help="write results to this file instead of stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stderr")
    return parser


@dataclass(frozen=True)
class Summary:
    images: int
    failed: int
    seconds: float  # from the first decode to the last line written; model loading excluded
    load_seconds: float
    backend: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.images} images, {self.failed} failed, {self.seconds:.1f} s, {self.images_per_s:.1f} images/s "
            f"(backend {self.backend}; loading the model took {self.load_seconds:.1f} s, not counted)"
        )


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> Summary:
    """Classify ``args.paths`` and write one result per file; returns the counts for the summary."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr  # looked up per call, so a redirect applies
    from tqdm import tqdm  # only the command line needs it, not the handler that imports this package

    paths, unmatched = collect_paths(args.paths)
    if unmatched:
        raise SystemExit(f"error: no such file, folder or glob match: {', '.join(unmatched)}")
    started = time.perf_counter()
    with open_model(args.model_dir, args.mar, args.model_config) as model:
        if model.drift:
            print(
                f"warning: {model.source} archives a different classifier/ ({', '.join(model.drift)}) than this checkout runs; "
                "answers may differ from the server's",
                file=stderr,
            )
        # The handler's own loading: the model-config's settings, the backend, one warm-up pass before the clock.
        service = ClassifierService.load(
            model.folder,
            model.config,
            device=torch.device(args.device),
            backend=args.backend,
            threads=args.threads,
            crop_mode="center" if args.center else None,
            identity=model.identity,
        )
    # Every backend has read its artifact by now, so the temporary copy of a .mar is gone already.
    load_seconds = time.perf_counter() - started

    fmt = choose_format(args.format, args.output, stdout.isatty())
    out = args.output.open("w", newline="") if args.output else stdout
    writer = Writer(out, fmt, service.settings.topk)
    failed = 0
    started = time.perf_counter()
    bar = tqdm(total=len(paths), unit="img", file=stderr, disable=args.quiet or not stderr.isatty(), delay=1.0)
    try:
        with ThreadPoolExecutor(args.workers, thread_name_prefix="decode") as pool:

            def prepare(path: Path) -> Item:
                return prepare_file(path, service, args.seed)

            def answer(batch: Sequence[Path], items: list[Item]) -> list[Result]:
                return answer_batch(batch, items, service)

            for result in predict_files(paths, prepare, answer, args.batch_size, pool):
                failed += result.code != 200
                writer.write([result])
                bar.update(1)
        writer.close()
    finally:
        bar.close()
        if args.output:
            out.close()
    return Summary(len(paths), failed, time.perf_counter() - started, load_seconds, service.backend.name)


def main(argv: Sequence[str] | None = None, prog: str = "python -m cli predict") -> int:
    parser = add_arguments(
        argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        summary = run(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return EXIT_USAGE
        raise
    if not args.quiet:
        print(summary.line(), file=sys.stderr)
    return EXIT_FAILED if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
