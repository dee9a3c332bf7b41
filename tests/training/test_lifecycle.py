"""Tracking, registry and tuning through the real CLIs, against a real `mlflow server` on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from serving.launcher import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.slow

TINY = ["--arch", "tiny", "--epochs", "2", "--synthetic-per-class", "12", "--synthetic-val-per-class", "6"]
TINY += ["--batch-size", "16", "--no-amp", "--threads", "1"]


def run(module: str, *args: str, uri: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` as a team would run it: its own SQLite store and artifact root, on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=(root / "server.log").open("w"), start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as make mlflow-ui runs it
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:  # a server that never became healthy is stopped too, with the uvicorn and job processes it started
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # refused, or a read timeout while it starts
                pass
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server did not answer /health in 120 s: {(root / 'server.log').read_text()[-2000:]}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def two_versions(mlflow_server, tmp_path_factory):
    """Two trainings against the server: registry versions 1 and 2, each with its model folder."""
    dirs = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"model-{seed}")
        done = run("training.train", *TINY, "--seed", str(seed), "--output-dir", str(out / "model"),
                   "--run-dir", str(out / "run"), uri=mlflow_server)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        dirs.append(out / "model")
    return dirs


def client(uri: str):
    import mlflow

    # Not mlflow.set_tracking_uri: it writes MLFLOW_TRACKING_URI into os.environ, and every later test's
    # subprocess would then track to this module's server after it has stopped.
    return mlflow.MlflowClient(tracking_uri=uri)


def test_a_training_logs_one_run_with_flags_metrics_artifacts_and_lineage(mlflow_server, two_versions):
    meta = json.loads((two_versions[0] / "metadata.json").read_text())
    c = client(mlflow_server)
    run = c.get_run(meta["registry"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["arch"] == "tiny" and run.data.params["seed"] == "0" and run.data.params["lr"] == "0.001"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert {"best_val_accuracy", "best_val_loss", "train_loss"} <= set(run.data.metrics)
    assert run.data.tags["data_sha256"] == meta["data_fingerprint"]["sha256"]
    assert (
        run.data.tags["git_commit"].split("-")[0]
        == subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=REPO, text=True).strip()
    )
    logged = {a.path for folder in ("plots", "run", "model") for a in c.list_artifacts(run.info.run_id, folder)}
    assert {"plots/confusion.png", "plots/loss.png", "run/metrics.json", "run/args.json", "model/model.pt2"} <= logged
    # The fingerprint counts every class of both splits (12 and 6 per class of the 4 generated classes).
    assert set(meta["data_fingerprint"]["class_counts"]["train"].values()) == {12}
    assert set(meta["data_fingerprint"]["class_counts"]["val"].values()) == {6}


def test_each_export_is_a_new_registry_version_that_the_model_carries(mlflow_server, two_versions):
    versions = [json.loads((d / "metadata.json").read_text())["version"] for d in two_versions]
    assert versions == ["1", "2"]
    mv = client(mlflow_server).get_model_version("classifier", "2")
    assert 0 <= float(mv.tags["val_accuracy"]) <= 1
    # The generated data depends on the seed, so the two versions record different data.
    first, second = (json.loads((d / "metadata.json").read_text())["data_fingerprint"]["sha256"] for d in two_versions)
    assert first != second


def test_a_version_is_fetched_from_the_registry_alone(mlflow_server, two_versions, tmp_path):
    done = run("training.registry", "fetch", "--version", "1", "--output-dir", str(tmp_path / "v1"), uri=mlflow_server)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "v1" / "model.pt2").read_bytes() == (two_versions[0] / "model.pt2").read_bytes()
    assert json.loads((tmp_path / "v1" / "metadata.json").read_text())["version"] == "1"
    bad = run("training.registry", "fetch", "--version", "7", "--output-dir", str(tmp_path / "v7"), uri=mlflow_server)
    assert bad.returncode != 0 and "MODEL_VERSION=7 is not a version" in bad.stderr and "known versions: 1, 2" in bad.stderr
    assert not (tmp_path / "v7").exists()


def test_an_unreachable_tracking_server_fails_before_training(tmp_path):
    started = time.monotonic()
    done = run("training.train", *TINY, "--output-dir", str(tmp_path / "model"), "--run-dir", str(tmp_path / "run"),
               uri=f"http://127.0.0.1:{free_port()}")  # fmt: skip
    assert done.returncode != 0
    assert "is not reachable" in done.stderr and "--no-track" in done.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "run").exists() and not (tmp_path / "model").exists()


def test_tuning_runs_child_trials_prunes_and_writes_a_config_training_takes(mlflow_server, tmp_path):
    space = tmp_path / "space.yaml"
    # Two learning rates, one of which cannot learn in two epochs: the median pruner stops a trial that uses it
    # after the first (unpruned) trial has set the baseline.
    space.write_text(
        "fixed: {arch: tiny, epochs: 2, synthetic-per-class: 16, synthetic-val-per-class: 8, batch-size: 16,"
        " threads: 1, amp: false}\n"
        "search:\n  lr: {choices: [0.003, 1.0e-9]}\n"
    )
    storage = f"sqlite:///{tmp_path}/optuna.db"
    done = run("training.tune", "--space", str(space), "--trials", "3", "--storage", storage,
               "--output", str(tmp_path / "tuned.yaml"), uri=mlflow_server, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="classifier", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 3 and optuna.trial.TrialState.PRUNED in states
    from training import train

    tuned = train.parse_args(["--config", str(tmp_path / "tuned.yaml")])
    assert tuned.arch == "tiny" and tuned.lr == study.best_params["lr"]
    c = client(mlflow_server)
    parents = c.search_runs([c.get_experiment_by_name("classifier").experiment_id], "tags.optuna_study = 'classifier'")
    assert len(parents) == 1
    children = c.search_runs([parents[0].info.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert len(children) == 3


@pytest.mark.parametrize(
    ("space", "message"),
    [("fixed: {epochs: 1}\n", "has no `search:` entries"), ("search:\n  learning-rate: {choices: [1]}\n", "unknown flags")],
)
def test_a_bad_search_space_is_refused_naming_the_fix(tmp_path, space, message):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    done = run("training.tune", "--space", str(path), "--trials", "1", "--storage", f"sqlite:///{tmp_path}/o.db",
               uri=f"sqlite:///{tmp_path}/m.db")  # fmt: skip
    assert done.returncode != 0 and message in done.stderr


def test_make_mlflow_ui_serves_on_loopback(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "mlflow-ui", f"MLFLOW_PORT={port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.RequestException:  # refused, or a read timeout while it starts
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                time.sleep(0.5)
        else:
            pytest.fail("make mlflow-ui did not answer in 120 s")
        assert answer.status_code == 200 and "MLflow" in answer.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
