"""What a peer serves: exactly what our TorchServe serves, read from the same ``.mar``.

The archive holds the model files, the model-config.yaml TorchServe reads (batching, workers and the handler's
settings) and the manifest that names the model and its version. A peer that loaded a model folder and the
checkout's model-config.yaml instead could serve other files, other threads or another version, and its answers
would differ from ours for a reason that has nothing to do with the server. ``cli.predict.open_model`` unpacks an
archive as the command-line predictor does; this module only keeps the folder for the life of the server.
"""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from classifier.service import ClassifierService
from classifier.settings import usable_cpus
from cli.predict import Model, mar_config_name, open_model

ROUTE = "/predictions/classifier"
SEED_HEADER = "x-seed"


@dataclass(frozen=True)
class Served:
    """A loaded service, the archive's model-config and the threads it runs with."""

    service: ClassifierService
    config: dict[str, Any]
    threads: int
    # Holds the unpacked archive: closing it (or collecting it) deletes the folder.
    folder: contextlib.ExitStack


def load(mar: Path, workers: int = 1, threads: int | None = None, stack: contextlib.ExitStack | None = None) -> Served:
    """Load the service from ``mar`` for one of ``workers`` processes; ``threads`` defaults to cores / workers.

    Our server sizes threads from the archive's minWorkers (one worker: both cores); a peer that runs ``workers``
    copies of the model gives each its share instead, so that every peer uses the same thread budget. The unpacked
    folder stays until ``stack`` closes (by default: until the process exits).
    """
    stack = stack or contextlib.ExitStack()
    model: Model = stack.enter_context(open_model(None, mar, None))
    threads = threads or max(1, usable_cpus() // workers)
    service = ClassifierService.load(model.folder, model.config, threads=threads, identity=model.identity)
    return Served(service, model.config, threads, stack)


def read_config(mar: Path) -> dict[str, Any]:
    """The archive's model-config, without loading the model: a peer's batching defaults are ours."""
    with zipfile.ZipFile(mar) as files:
        name = mar_config_name(files)
        return (yaml.safe_load(files.read(name)) if name else None) or {}


def batching(mar: Path, size: int | None = None, delay_s: float | None = None) -> tuple[int, float]:
    """A peer's batch size and delay in seconds: ``size`` and ``delay_s`` when given, else the archive's own
    batchSize and maxBatchDelay, which are our server's."""
    config = read_config(mar)
    ours = int(config.get("batchSize", 1) or 1), float(config.get("maxBatchDelay", 0) or 0) / 1000
    return size or ours[0], ours[1] if delay_s is None else delay_s
