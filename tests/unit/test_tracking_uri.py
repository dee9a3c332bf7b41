"""The default tracking store is named by an absolute path: metadata.json records it for later commands."""

from __future__ import annotations

from training import tracking


def test_the_default_store_is_absolute_and_under_the_current_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"


def test_a_tracking_server_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
