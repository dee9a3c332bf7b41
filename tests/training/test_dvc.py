"""dvc.yaml through the real `dvc repro` (its own venv, .venv-dvc), on a copy of the checkout with the tiny model.

The pipeline is data fingerprint -> train -> export -> archive. A second `dvc repro` with nothing changed must run no
stage and leave every output and dvc.lock as they were; a change under data/ must mark the data stage changed; a data
path outside data/ (where DVC would not see it change) must stop with a message that names the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

DVC = REPO / ".venv-dvc" / "bin" / "dvc"
STAGES = ("data", "train", "export", "archive")
OUTS = ("build/pipeline/data.json", "build/pipeline/model/model.pt2", "build/pipeline/export/model.int8.onnx")
OUTS += ("build/pipeline/model_store/classifier.mar",)
TINY_PIPELINE = """\
arch: tiny
epochs: 1
seed: 0
synthetic_per_class: 8
synthetic_val_per_class: 4
batch_size: 16
amp: false
threads: 1
"""


def dvc(checkout: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # No MLFLOW_TRACKING_URI: the copy's stages track to its own runs/mlflow.db, the default a user gets offline.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([str(DVC), *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The tracked files of this checkout in a fresh git repository, with the project's .venv and a tiny pipeline."""
    if not DVC.exists():
        pytest.fail("dvc is missing: run `make repro` (make test does it) to create .venv-dvc")
    root = tmp_path_factory.mktemp("dvc") / "checkout"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():  # a file deleted in the work tree but not yet from the index is skipped
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".venv").symlink_to(REPO / ".venv")  # dvc.yaml's stages run .venv/bin/python, as in a checkout
    (root / "configs" / "pipeline.yaml").write_text(TINY_PIPELINE)
    (root / "data").mkdir()  # what make repro creates
    return root


@pytest.fixture(scope="module")
def first_repro(checkout) -> subprocess.CompletedProcess:
    result = dvc(checkout, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_first_repro_runs_every_stage_and_builds_the_archive(checkout, first_repro):
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first_repro.stdout, first_repro.stdout[-3000:]
    for out in OUTS:
        assert (checkout / out).stat().st_size > 0, out
    assert (checkout / "dvc.lock").is_file()
    assert (checkout / "runs" / "mlflow.db").is_file(), "the train stage tracks to the checkout's default store"


def test_second_repro_with_nothing_changed_does_nothing(checkout, first_repro):
    lock = (checkout / "dvc.lock").read_text()
    mtimes = {out: (checkout / out).stat().st_mtime_ns for out in OUTS}
    again = dvc(checkout, "repro")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Running stage" not in again.stdout, again.stdout
    assert "Data and pipelines are up to date." in again.stdout, again.stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout, again.stdout
    assert (checkout / "dvc.lock").read_text() == lock
    assert {out: (checkout / out).stat().st_mtime_ns for out in OUTS} == mtimes, "an output was rewritten"


def test_a_change_under_data_marks_the_data_stage_changed(checkout, first_repro):
    (checkout / "data" / "new-images").mkdir()
    (checkout / "data" / "new-images" / "note.txt").write_text("collected after the drift alert\n")
    try:
        status = dvc(checkout, "status")
        assert status.returncode == 0, status.stderr
        assert "data:" in status.stdout and "modified:" in status.stdout and "data" in status.stdout, status.stdout
        assert "train:" not in status.stdout, "only the data stage's own deps changed"
    finally:
        shutil.rmtree(checkout / "data" / "new-images")


def test_data_outside_the_hashed_folder_is_refused_with_the_fix(checkout, first_repro, tmp_path):
    elsewhere = tmp_path / "images"
    (elsewhere / "cat").mkdir(parents=True)
    pipeline = checkout / "configs" / "pipeline.yaml"
    pipeline.write_text(TINY_PIPELINE + f"data: {elsewhere}\n")
    try:
        result = dvc(checkout, "repro", "data")
        assert result.returncode != 0, result.stdout
        message = result.stdout + result.stderr
        assert f"data: {elsewhere}, outside data/" in message, message[-3000:]
        assert "under data/" in message
    finally:
        pipeline.write_text(TINY_PIPELINE)
