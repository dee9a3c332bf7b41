"""Every README command that talks to the server works as written, against a real TorchServe.

The commands are read from the README itself, so an edited or added command is tested without touching this file.
Only the address changes: the test server listens on free loopback ports instead of 8080 and 7070.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.integration.test_http import check_contract

pytestmark = [pytest.mark.server, pytest.mark.slow]


def readme_commands(prefix: str) -> list[list[str]]:
    """The argument lists of the README's ```bash lines that start with ``prefix`` (trailing comments dropped)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        commands += [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith(prefix)]
    return commands


CURLS = readme_commands("curl ")
GRPC = readme_commands(".venv/bin/python -m serving.grpc_client")


def test_the_readme_has_the_commands_this_test_expects():
    assert len(CURLS) >= 4 and GRPC, (CURLS, GRPC)
    assert all(any("localhost:8080" in arg for arg in c) for c in CURLS)


@pytest.mark.parametrize("command", CURLS, ids=shlex.join)
def test_readme_curl_command_answers(server, command, tmp_path):
    host = server.inference_url.removeprefix("http://")
    args = [arg.replace("localhost:8080", host) for arg in command]
    assert sum(host in arg for arg in args) == 1, "the command must name exactly one URL, the test server's"
    out = tmp_path / "body.json"
    result = subprocess.run([*args, "-sS", "-o", str(out), "-w", "%{http_code}"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "200", f"{command} -> HTTP {result.stdout}: {out.read_text()[:300]}"
    body = json.loads(out.read_text())
    check_contract(body)
    if "X-Seed: 42" in command or "seed=42" in command:
        assert body["crop"]["seed"] == 42


def test_readme_grpc_command_answers(server):
    port = server.props["grpc_inference_port"]
    for command in GRPC:
        result = subprocess.run([sys.executable, *command[1:], "--port", port], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        check_contract(body)
        assert body["crop"]["seed"] == 42


def test_data_binary_without_a_content_type_is_the_frontend_500_the_readme_warns_about(server):
    """Documents a TorchServe 0.12 limit: if this starts passing, the README's warning can go."""
    url = f"{server.inference_url}/predictions/classifier"
    result = subprocess.run(
        ["curl", "-sS", "--data-binary", "@docs/sample.png", url, "-w", "\n%{http_code}"], cwd=REPO, capture_output=True
    )
    assert result.stdout.rsplit(b"\n", 1)[-1] == b"500"
    assert b"ErrorDataDecoderException" in result.stdout or b"Bad string" in result.stdout
