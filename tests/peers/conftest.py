"""The peers' own fixtures: a peer server on free loopback ports, from its venv (`make peers`), and our TorchServe."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from serving.launcher import free_port

# Our server and its archive, exactly as the integration tests build them: the peers serve that same archive.
from tests.integration.conftest import images, model_store, server  # noqa: F401
from tests.peers.processes import PeerServer, peer_server

TRITON_READY_S = 180


@pytest.fixture(scope="session")
def triton(model_store, tmp_path_factory) -> Iterator[PeerServer]:  # noqa: F811 (the fixture imported above)
    """peers/triton.py on the archive our `server` serves (same model, model-config, version), one request per execute."""
    http = free_port()
    args = ["--mar", str(model_store / "classifier.mar")]
    args += ["--http-port", str(http), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    log = tmp_path_factory.mktemp("triton") / "triton.log"

    def ready(url: str) -> bool:
        return requests.get(f"{url}/v2/models/classifier/ready", timeout=2).status_code == 200

    with peer_server(".venv-triton", "peers.triton", args, http, log, ready, timeout=TRITON_READY_S) as peer:
        yield peer
