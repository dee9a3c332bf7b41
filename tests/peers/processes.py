"""A peer server as a test fixture: started from its own venv on a free loopback port, stopped with the session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO

# A peer loads torch, OpenVINO and (Ray) a whole cluster on 2 shared cores: minutes, not seconds, when they are busy.
READY_TIMEOUT_S = 300


@dataclass(frozen=True)
class PeerServer:
    url: str
    process: subprocess.Popen
    log: Path

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def peer_server(
    venv: str,
    module: str,
    args: list[str],
    port: int,
    log: Path,
    ready: Callable[[str], bool],
    timeout: float = READY_TIMEOUT_S,
) -> Iterator[PeerServer]:
    """``venv/bin/python -m module args`` until ``ready(url)`` is true; fails naming `make peers` without the venv."""
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make peers` (it builds {venv} from its lock in peers/)")
    with log.open("wb") as out:
        # Its own process group: Ray and LitServe start children (raylet, workers, API servers) that must stop with it.
        process = subprocess.Popen(
            [str(python), "-m", module, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    peer = PeerServer(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while not _ready(ready, peer.url):
            if process.poll() is not None:
                pytest.fail(f"{module} exited with {process.returncode}:\n{peer.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{module} was not ready in {timeout:.0f} s:\n{peer.tail()}")
            time.sleep(1)
        yield peer
    finally:
        _stop(process)


def _ready(ready: Callable[[str], bool], url: str) -> bool:
    try:
        return ready(url)
    except requests.RequestException:
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the peer's process group, then SIGKILL to what is left of it after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
