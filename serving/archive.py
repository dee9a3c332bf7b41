"""Build the model archive, classifier.mar, for one inference backend.

    python -m serving.archive --model-dir build/model --backend openvino-int8 --model-config model-config.yaml \\
        --export-path model_store [--version V]
    python -m serving.archive --backend openvino-int8 --print-artifacts

The first is `make archive`. It packs the model files that the backend and its fallbacks need
(:func:`classifier.artifacts.archive_artifacts`), the handler and the core package it imports (so the .mar is
self-contained: tests/integration/test_archive.py), the labels and metadata, and model-config.yaml with
``handler.backend`` set to the backend, then runs the environment's torch-model-archiver. The archive's version is
``--version`` (``make archive VERSION=<v>``), by default the model folder's (:func:`classifier.versions.folder_version`:
the one training recorded in metadata.json, else a hash of the model's files), never a constant: two different models
must not register under one version.

The second prints those model files' names: make asks it while reading the Makefile, to build the missing ones
first (training, the ONNX export). That happens before ``.venv`` may exist, so this module imports only the
standard library at the top; the YAML library is imported where the archive is built.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from io import StringIO
from pathlib import Path

from classifier.artifacts import archive_artifacts, check_backend
from classifier.versions import MODEL_NAME, archive_identity, check_version, folder_version

REPO = Path(__file__).resolve().parent.parent
HANDLER = REPO / "handlers" / "classifier_handler.py"
# Built by `make native`; without it the handler decodes every JPEG in full (classifier/jpeg_region.py).
NATIVE_LIBRARY = REPO / "classifier" / "_jpegregion.so"
SERIALIZED = "model.pt2"
# What training writes beside the model, which the handler reads at load time.
MODEL_FILES = ("index_to_name.json", "metadata.json")


def required_files(model_dir: Path, backend: str) -> list[Path]:
    """Every file of the model folder that an archive for ``backend`` packs."""
    return [model_dir / name for name in (*archive_artifacts(backend), *MODEL_FILES)]


def missing_file_message(path: Path, backend: str) -> str:
    """What is missing, and which make target writes it (training, or the ONNX export for the backend)."""
    model_dir = path.parent
    if path.suffix == ".onnx":
        how = f"`make archive MODEL_DIR={model_dir} BACKEND={backend}` writes it first (python -m training.export_onnx)"
    else:
        how = f"`make train MODEL_DIR={model_dir}` writes it"
    packs = ", ".join(archive_artifacts(backend))
    return f"error: {path} is missing: an archive for backend {backend} packs {packs} and {', '.join(MODEL_FILES)}; {how}"


def with_backend(model_config: str, backend: str) -> str:
    """``model_config`` (a model-config.yaml's text) with ``handler.backend`` set to ``backend``, and nothing else changed.

    ruamel.yaml's round trip keeps the file's comments, order and layout, so the archived copy still documents
    every knob; PyYAML would drop the comments.
    """
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    config = yaml.load(model_config)
    if config is None:
        config = {}
    if not isinstance(config, dict) or not isinstance(config.get("handler", {}), dict):
        raise ValueError("model-config must be a mapping whose `handler:` section is a mapping")
    config.setdefault("handler", {})["backend"] = backend
    out = StringIO()
    yaml.dump(config, out)
    return out.getvalue()


def stage(folder: Path, model_dir: Path, backend: str) -> None:
    """Lay out in ``folder`` what the archive's root holds besides the handler, model.pt2 and the model-config.

    handlers/ and classifier/ are copied as packages (the handler imports both); the model files are linked,
    not copied, because the archiver copies everything once more into its own folder.
    """
    for package in ("handlers", "classifier"):
        (folder / package).mkdir(parents=True)
        for source in sorted((REPO / package).glob("*.py")):
            shutil.copy2(source, folder / package / source.name)
    if NATIVE_LIBRARY.exists():
        shutil.copy2(NATIVE_LIBRARY, folder / "classifier" / NATIVE_LIBRARY.name)
    else:
        rel = NATIVE_LIBRARY.relative_to(REPO)
        print(f"note: archive without {rel} (make native builds it): the server will decode JPEGs in full", file=sys.stderr)
    for path in required_files(model_dir, backend):
        if path.name != SERIALIZED:  # the archiver takes it as --serialized-file
            (folder / path.name).symlink_to(path.resolve())


def archiver_command(
    archiver: Path, model_dir: Path, extra: Path, model_config: Path, export_path: Path, version: str
) -> list[str]:
    # fmt: off
    return [
        str(archiver), "--force", "--model-name", MODEL_NAME, "--version", version,
        "--serialized-file", str(model_dir / SERIALIZED),
        "--handler", str(HANDLER),
        "--extra-files", str(extra),  # a folder: the archiver copies what it holds to the archive's root
        "--config-file", str(model_config),
        "--export-path", str(export_path),
    ]
    # fmt: on


def build_archive(model_dir: Path, backend: str, model_config: Path, export_path: Path, version: str | None = None) -> Path:
    """Write ``export_path``/classifier.mar; a SystemExit naming the problem if an input is missing or bad.

    ``version`` None: the model folder's own (:func:`classifier.versions.folder_version`).
    """
    try:
        check_backend(backend)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    for path in required_files(model_dir, backend):
        if not path.is_file():
            raise SystemExit(missing_file_message(path, backend))
    try:
        version = check_version(version) if version is not None else folder_version(model_dir)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not model_config.is_file():
        raise SystemExit(f"error: no model-config at {model_config} (the repository's is model-config.yaml)")
    # The environment's own archiver, the one pinned in requirements.lock.
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    if not archiver.exists():
        raise SystemExit(f"error: {archiver} is missing; `make install` installs torch-model-archiver into .venv")
    try:
        config_text = with_backend(model_config.read_text(), backend)
    except ValueError as exc:
        raise SystemExit(f"error: {model_config}: {exc}") from None
    export_path.mkdir(parents=True, exist_ok=True)
    # One private folder per run, for the staging and for the archiver's own copy ($TMPDIR/<model name>), so
    # that archives built at the same time (tests, sweeps) never read or delete each other's files.
    with tempfile.TemporaryDirectory(prefix="classifier-archive-") as tmp:
        work = Path(tmp)
        extra, archiver_tmp = work / "extra", work / "tmp"
        archiver_tmp.mkdir()
        stage(extra, model_dir, backend)
        config_path = work / f"model-config.{backend}.yaml"
        config_path.write_text(config_text)
        command = archiver_command(archiver, model_dir, extra, config_path, export_path, version)
        env = {**os.environ, "TMPDIR": str(archiver_tmp)}
        done = subprocess.run(command, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"error: torch-model-archiver failed (exit status {done.returncode}), see above")
    return export_path / f"{MODEL_NAME}.mar"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", required=True, help="inference backend: classifier.artifacts.BACKENDS")
    p.add_argument("--print-artifacts", action="store_true", help="print the model files the archive packs, and exit")
    p.add_argument("--model-dir", type=Path, help="the model folder `make train` writes (e.g. build/model)")
    p.add_argument("--model-config", type=Path, help="the model-config.yaml to pack, with handler.backend set")
    p.add_argument("--export-path", type=Path, help="folder the archive is written to (e.g. model_store)")
    p.add_argument(
        "--version",
        help="the archive's model version (default: metadata.json's \"version\", else sha256- and 12 hex digits "
        "of the model's files)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.print_artifacts:
        try:
            print(" ".join(archive_artifacts(args.backend)))
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        return
    missing = [flag for flag in ("model_dir", "model_config", "export_path") if getattr(args, flag) is None]
    if missing:
        parser.error("building an archive needs " + ", ".join("--" + name.replace("_", "-") for name in missing))
    mar = build_archive(args.model_dir, args.backend, args.model_config, args.export_path, args.version)
    print(f"wrote {mar} (backend {args.backend}, version {archive_identity(mar).version})")


if __name__ == "__main__":
    main()
