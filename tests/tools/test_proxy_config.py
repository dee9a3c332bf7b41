"""The proxy in front of TorchServe (serving/drain.py): the config it writes is one the installed HAProxy accepts.

Debian's haproxy; `make install` installs it as root (`make install-proxy`).
"""

from __future__ import annotations

import subprocess

import pytest

from serving.drain import HAPROXY_INSTALL, Proxy, haproxy_bin
from serving.launcher import read_properties
from tests.conftest import REPO


def haproxy() -> str:
    try:
        return haproxy_bin()
    except FileNotFoundError:
        pytest.fail(f"haproxy is missing: {HAPROXY_INSTALL}")


@pytest.mark.parametrize("config", ["config.properties", "docker/config.properties", "deploy/k8s/base/config.properties"])
def test_haproxy_accepts_the_config_written_for_each_server_config(config, tmp_path):
    proxy = Proxy(tmp_path)
    private = proxy.configure(read_properties(REPO / config), stop_timeout=8, quiet_s=1)
    out = subprocess.run([haproxy(), "-c", "-f", str(proxy.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert private["inference_address"].startswith("http://127.0.0.1:")


def test_the_check_can_fail(tmp_path):
    proxy = Proxy(tmp_path)
    proxy.configure(read_properties(REPO / "config.properties"), stop_timeout=8, quiet_s=1)
    proxy.config.write_text(proxy.config.read_text().replace("option idle-close-on-response", "option idle-close-on-reply"))
    out = subprocess.run([haproxy(), "-c", "-f", str(proxy.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
