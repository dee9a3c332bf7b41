"""MLflow tracking and the model registry, for training.train: one run per training, one registry version per export.

Training calls this module at four points: ``start`` (before any data is read: an unreachable tracking server fails
here, not after an hour of training), ``epoch`` (per-epoch metrics; Optuna's pruning hooks in next to it),
``finish`` (final metrics, plots, the run folder) and ``register`` (the export as a new version of ``classifier``).
``--no-track`` skips all of them, and training runs exactly as without this module.

Where runs go: ``MLFLOW_TRACKING_URI`` when set (a team's ``mlflow server``), else the embedded store
``sqlite:///runs/mlflow.db`` with artifacts under ``runs/mlartifacts``: no server to start, works offline.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EXPERIMENT = "classifier"
REGISTERED_MODEL = "classifier"
DEFAULT_STORE = Path("runs")
# A tracking server that does not answer its health check within this many seconds is reported unreachable.
HEALTH_TIMEOUT_S = 5.0


def tracking_uri() -> str:
    # Absolute, because metadata.json records it: a later `registry.attach` or `make archive` run from another
    # folder must open this store, not a new runs/ beside it.
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def check_reachable(uri: str) -> None:
    """An http(s) tracking URI must answer ``/health``; stop naming the URI and the fix when it does not."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S) as answer:
            if answer.status == 200:
                return
            problem = f"HTTP {answer.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise SystemExit(
        f"error: the MLflow tracking server {uri} is not reachable ({problem}). Start it (mlflow server), fix "
        "MLFLOW_TRACKING_URI, unset it to use the local store runs/mlflow.db, or pass --no-track."
    )


def git_commit() -> str | None:
    """The checkout's commit, with '-dirty' when files differ from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def _flat_metrics(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """One training's MLflow run. Nested under the active run when there is one (each Optuna trial is a child run)."""

    def __init__(self) -> None:
        import mlflow  # imported here: `--no-track` and everything else that imports training.train never pays for it

        self.mlflow = mlflow
        self.uri = tracking_uri()
        check_reachable(self.uri)
        location = None
        if self.uri.startswith("sqlite:///"):
            # Artifacts beside the database, not in ./mlruns of whatever folder training was started from.
            store = Path(self.uri.removeprefix("sqlite:///")).parent
            store.mkdir(parents=True, exist_ok=True)
            location = (store / "mlartifacts").resolve().as_uri()
        mlflow.set_tracking_uri(self.uri)
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        mlflow.set_experiment(EXPERIMENT)
        self.run = mlflow.start_run(nested=mlflow.active_run() is not None)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def start(self, args: dict[str, Any], fingerprint: dict | None, data: str | None) -> None:
        # MLflow params are strings of at most 6,000 characters: every flag fits.
        self.mlflow.log_params({k: "" if v is None else str(v) for k, v in args.items()})
        tags = {"git_commit": git_commit() or "unknown", "data": data or "none"}
        if fingerprint is not None:
            tags["data_sha256"] = fingerprint["sha256"]
            self.mlflow.log_dict(fingerprint, "data_fingerprint.json")
        self.mlflow.set_tags(tags)

    def epoch(self, record: dict) -> None:
        metrics = {**_flat_metrics("train_", record["train"]), **_flat_metrics("val_", record["val"]), "lr": record["lr"]}
        self.mlflow.log_metrics(metrics, step=record["epoch"])

    def finish(self, metrics: dict, run_dir: Path) -> None:
        best = {k: v for k, v in metrics["best"].items() if k != "confusion"}
        self.mlflow.log_metrics(_flat_metrics("best_", best) | {"seconds": float(metrics["seconds"])})
        for path in sorted(run_dir.glob("*.png")):
            self.mlflow.log_artifact(str(path), "plots")
        # The rest of the run folder without its checkpoints: those are large, and the export is the best one anyway.
        for path in sorted(p for p in run_dir.iterdir() if p.is_file() and p.suffix not in (".pt", ".png")):
            self.mlflow.log_artifact(str(path), "run")

    def register(self, metadata: dict) -> str:
        """A new registry version of ``classifier`` for the export ``log_export`` then logs; returns its number.

        The version's number is known only once it exists, and metadata.json carries it (the archive and every answer
        report it), so the version is created first with its source, then the files are logged there.
        """
        client = self.mlflow.MlflowClient()
        try:
            client.get_registered_model(REGISTERED_MODEL)
        except self.mlflow.exceptions.MlflowException:
            client.create_registered_model(REGISTERED_MODEL, description="ResNet50 classifier exported by training.train")
        source = f"{self.run.info.artifact_uri}/model"
        best = metadata["training"]["best"]
        tags = {
            "val_accuracy": str(best.get("val_accuracy")),
            "data_sha256": (metadata.get("data_fingerprint") or {}).get("sha256", ""),
        }
        version = client.create_model_version(REGISTERED_MODEL, source, run_id=self.run_id, tags=tags).version
        metadata["version"] = str(version)
        metadata["registry"] = {
            "name": REGISTERED_MODEL,
            "version": str(version),
            "run_id": self.run_id,
            "tracking_uri": self.uri,
        }
        return str(version)

    def log_export(self, export_dir: Path) -> None:
        self.mlflow.log_artifacts(str(export_dir), "model")

    def end(self, ok: bool) -> None:
        self.mlflow.end_run("FINISHED" if ok else "FAILED")
