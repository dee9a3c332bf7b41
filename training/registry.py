"""The model registry, for make: list the versions of ``classifier``, fetch one into a model folder, attach exports.

    python -m training.registry list
    python -m training.registry fetch --version 3 --output-dir build/registry/3

``make archive MODEL_VERSION=3`` fetches version 3 into ``build/registry/3`` and packs it from there, so an archive is
rebuilt from the registry alone. Training registers the version (training/tracking.py); the ONNX export then
attaches ``model.onnx``, ``model.int8.onnx`` and the updated ``metadata.json`` (its ``int8_calibration``) to the same
version (``attach``), so a fetched version needs neither the training data nor a new calibration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from training import tracking

# What a version holds once exported; a version fetched without the ONNX files gets them from make's export rule.
MODEL_FILES = ("model.pt2", "index_to_name.json", "metadata.json")
EXPORT_FILES = ("model.onnx", "model.int8.onnx")


def _client():
    import mlflow

    uri = tracking.tracking_uri()
    tracking.check_reachable(uri)
    # A client bound to the URI, not mlflow.set_tracking_uri, which would also rewrite os.environ.
    return mlflow, mlflow.MlflowClient(tracking_uri=uri)


def versions(client=None) -> list[str]:
    """The registered versions of ``classifier``, oldest first (empty when nothing was registered yet)."""
    client = client or _client()[1]
    found = client.search_model_versions(f"name='{tracking.REGISTERED_MODEL}'")
    return sorted((v.version for v in found), key=int)


def fetch(version: str, output_dir: Path) -> Path:
    """Download ``version`` into ``output_dir`` (replaced whole, so no file of another version stays behind)."""
    mlflow, client = _client()
    known = versions(client)
    if version not in known:
        listed = ", ".join(known) if known else "none yet (make train registers one)"
        raise SystemExit(
            f"error: MODEL_VERSION={version} is not a version of {tracking.REGISTERED_MODEL} in {tracking.tracking_uri()}; "
            f"known versions: {listed}"
        )
    source = client.get_model_version(tracking.REGISTERED_MODEL, version).source
    with tempfile.TemporaryDirectory(dir=output_dir.parent if output_dir.parent.exists() else None) as tmp:
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking.tracking_uri()))
        missing = [f for f in MODEL_FILES if not (got / f).is_file()]
        if missing:
            raise SystemExit(f"error: registry version {version} ({source}) lacks {', '.join(missing)}")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(got), output_dir)
    # The exports are made from model.pt2: newer than it, so that make does not redo them.
    stamp = (output_dir / "model.pt2").stat().st_mtime
    for name in EXPORT_FILES:
        if (output_dir / name).exists():
            os.utime(output_dir / name, (stamp + 1, stamp + 1))
    return output_dir


def attach(model_dir: Path, metadata: dict) -> None:
    """Add the ONNX exports and the final metadata.json to the registry version ``metadata`` names, if any."""
    registry = metadata.get("registry")
    if not registry:
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=registry["tracking_uri"])
    for name in (*EXPORT_FILES, "metadata.json"):
        if (model_dir / name).exists():
            client.log_artifact(registry["run_id"], str(model_dir / name), "model")
    print(f"attached the ONNX exports to version {registry['version']} of {registry['name']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered versions, oldest first")
    p_fetch = sub.add_parser("fetch", help="download one version into a model folder")
    p_fetch.add_argument("--version", required=True, help="the registry version (make archive MODEL_VERSION=)")
    p_fetch.add_argument("--output-dir", type=Path, required=True, help="model folder to (re)create")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(versions()) or "no versions registered yet (make train registers one)")
    else:
        print(f"fetched version {args.version} into {fetch(args.version, args.output_dir)}")


if __name__ == "__main__":
    main()
