from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from serving.launcher import TorchServeProcess, loopback_overrides
from tests.conftest import REPO
from training import synthetic


def server_overrides(store: Path) -> dict[str, str]:
    """Free loopback ports for every listener, so tests never collide with `make serve` or each other."""
    return loopback_overrides(store)


@pytest.fixture(scope="session")
def model_store(tiny_model_dir, tmp_path_factory) -> Path:
    """classifier.mar built by the project's own `make archive`, from the tiny training run.

    The model config is the shipped one with a longer batch delay, so concurrent
    test requests are really served as one batch.
    """
    work = tmp_path_factory.mktemp("archive")
    config = yaml.safe_load((REPO / "model-config.yaml").read_text())
    config.update(batchSize=4, maxBatchDelay=200)
    (work / "model-config.yaml").write_text(yaml.safe_dump(config))
    store = work / "model_store"
    subprocess.run(
        [
            "make",
            "-s",
            "archive",
            f"MODEL_DIR={tiny_model_dir}",
            f"MODEL_STORE={store}",
            f"MODEL_CONFIG={work / 'model-config.yaml'}",
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    assert (store / "classifier.mar").exists()
    return store


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory):
    with TorchServeProcess(REPO / "config.properties", tmp_path_factory.mktemp("ts"), server_overrides(model_store)) as ts:
        yield ts


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    paths = synthetic.write_folder(root, per_class=1, seed=11)  # png, jpeg, png, jpeg
    return {p.suffix.lstrip("."): p for p in paths}
