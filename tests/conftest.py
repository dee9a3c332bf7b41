"""Shared fixtures. Tests are split by what they need:

- tests/unit: pure functions: no model file, no external tool, no server;
- tests/model: a trained model (the real handler class with TorchServe's own Context, the CLI, the backends), no server;
- tests/training: the training and export scripts through their real CLIs;
- tests/integration: a real TorchServe (Java frontend + Python worker) on free loopback ports;
- tests/tools: the deployment files and the install, checked by the real tools (hadolint, kubectl, checkov, promtool,
  pre-commit, pip, torch-model-archiver): marked `tool`;
- tests/cpp: the C++ pipeline, built with cmake and g++: marked `tool`.

Markers follow from that (the hook below): every test that needs a trained model (the `tiny_model_dir` fixture,
however indirectly) is `slow`, so `make test-fast` (`-m "not slow and not server"`) trains nothing; every test under
tests/tools and tests/cpp is `tool`, so `pytest -m "not tool"` runs without them.

The model used everywhere is a real export of the `tiny` architecture (same
stem, same 2048-d embedding, same .pt2 path as ResNet50) after a short training
run through the real CLI, so the suite stays fast on two cores.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
# Every training a test starts tracks to a store of the session's own, never to the checkout's runs/mlflow.db
# (nor to a team server that MLFLOW_TRACKING_URI might name in the caller's shell).
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp(prefix='mlflow-tests-')}/mlflow.db"


@pytest.fixture(autouse=True)
def _tracking_uri_unchanged():
    """Fail the test that rewrites MLFLOW_TRACKING_URI (mlflow.set_tracking_uri does): later tests would inherit it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    assert os.environ.get("MLFLOW_TRACKING_URI") == before, "this test left MLFLOW_TRACKING_URI changed"


TOOL_FOLDERS = ("tools", "cpp")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tiny_model_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        if Path(item.fspath).parent.name in TOOL_FOLDERS and Path(item.fspath).parent.parent == REPO / "tests":
            item.add_marker(pytest.mark.tool)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """build/model-style folder from `python -m training.train --arch tiny`, plus its ONNX fp32/int8 exports.

    Trained long enough (4 epochs of 256 images) that its top-1 margins are not
    coin flips, so the backend agreement tests measure quantization, not noise.
    """
    out = tmp_path_factory.mktemp("tiny_model")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "training.train",
            "--arch",
            "tiny",
            "--epochs",
            "4",
            "--synthetic-per-class",
            "64",
            "--synthetic-val-per-class",
            "8",
            "--batch-size",
            "16",
            "--output-dir",
            str(out),
            "--run-dir",
            str(tmp_path_factory.mktemp("tiny_run")),
            # Untracked: its version stays the content hash that the archive and rollout tests expect.
            "--no-track",
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [sys.executable, "-m", "training.export_onnx", "--model-dir", str(out), "--calibration-images", "64"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return out


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def random_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def run_make(*args: str, unset: tuple[str, ...] = ()) -> str:
    """make ARGS in the repository, never re-running the install; its stdout. Fails the test when make fails.

    The parent make's flags (when the tests run under `make test`) would add "Entering directory" lines: start clean.
    ``unset`` drops more variables from the environment (a BACKEND the caller's shell may have set).
    """
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", *unset}}
    out = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def make_dry_run(*args: str) -> str:
    """`make -n ARGS` in the repository: the commands a target would run, without the archive or install steps."""
    return run_make("-n", "-o", "model_store/classifier.mar", *args)
