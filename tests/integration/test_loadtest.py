"""The locust load test against a real TorchServe: a short run that must see no failure, and one that must fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.running import parse_locust_stats
from loadtests.images import write_images
from tests.conftest import REPO

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loadtest_images")
    paths = write_images(root, per_class=2, large_per_class=1)
    assert {p.suffix for p in paths} == {".png", ".jpg"}
    return root


def locust(server, image_dir: Path, csv_prefix: Path, users: int, seconds: int, response_format: str, *extra: str) -> dict:
    """The real locust CLI, headless, as `make loadtest` runs it; returns the Aggregated row of its CSV."""
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO / "loadtests" / "locustfile.py"),
        "--headless",
        "--only-summary",
        "--host",
        server.inference_url,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--csv",
        str(csv_prefix),
        "--image-dir",
        str(image_dir),
        "--model-name",
        "classifier",
        "--response-format",
        response_format,
        *extra,
    ]
    done = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=seconds + 90
    )
    stats = Path(f"{csv_prefix}_stats.csv")
    assert stats.exists(), done.stdout + done.stderr
    return {"returncode": done.returncode, "output": done.stdout + done.stderr, **parse_locust_stats(stats)}


def test_locust_smoke_run_has_no_failures(server, image_dir, tmp_path):
    result = locust(server, image_dir, tmp_path / "smoke", users=4, seconds=10, response_format="ours")
    failures = (tmp_path / "smoke_failures.csv").read_text()
    assert result["requests"] > 0, result["output"]
    assert result["failures"] == 0, failures
    assert result["returncode"] == 0, result["output"]
    assert result["p50_ms"] and result["p50_ms"] > 0


def test_locust_marks_answers_of_the_wrong_shape_as_failures(server, image_dir, tmp_path):
    """Our 200 answers checked as stock TorchServe's {label: prob} must all fail: the load test reads the body."""
    result = locust(server, image_dir, tmp_path / "wrong", users=2, seconds=4, response_format="stock")
    assert result["requests"] > 0, result["output"]
    assert result["failures"] == result["requests"]
    assert "bad label/probability pair" in (tmp_path / "wrong_failures.csv").read_text()
    assert result["returncode"] != 0


def test_locust_grpc_user_has_no_failures(server, image_dir, tmp_path):
    port = server.props["grpc_inference_port"]
    result = locust(server, image_dir, tmp_path / "grpc", 2, 6, "ours", "--protocol", "grpc", "--grpc-port", port)
    assert result["requests"] > 0, result["output"]
    assert result["failures"] == 0, (tmp_path / "grpc_failures.csv").read_text()
    assert "Predictions/classifier" in (tmp_path / "grpc_stats.csv").read_text()  # gRPC calls, not HTTP ones
    assert "/predictions/classifier" not in (tmp_path / "grpc_stats.csv").read_text()
