"""The peers' own fixtures: a peer server on free loopback ports, from its venv (`make peers`), and our TorchServe."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from serving.launcher import free_port
from tests.conftest import REPO

# Our server and its archive, exactly as the integration tests build them: the peers serve that same archive.
from tests.integration.conftest import images, model_store, server  # noqa: F401

TRITON_PYTHON = REPO / ".venv-triton" / "bin" / "python"


class Peer:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log


@pytest.fixture(scope="session")
def triton(model_store, tmp_path_factory) -> Iterator[Peer]:  # noqa: F811 (the fixture imported above)
    """peers/triton.py on the archive our `server` serves (same model, model-config, version), one request per execute."""
    if not TRITON_PYTHON.exists():
        pytest.fail(f"{TRITON_PYTHON} is missing: run `make peers` (it builds .venv-triton from peers/requirements-triton.lock)")
    http = free_port()
    log = tmp_path_factory.mktemp("triton") / "triton.log"
    argv = [str(TRITON_PYTHON), "-m", "peers.triton", "--mar", str(model_store / "classifier.mar")]
    argv += ["--http-port", str(http), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"peers.triton exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/v2/models/classifier/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"peers.triton was not ready in 180 s:\n{log.read_text()[-3000:]}")
        yield Peer(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
