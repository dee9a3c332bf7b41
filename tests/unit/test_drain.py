"""The pure parts of serving/drain.py: where the proxy listens, what it says on errors, what it counts, the budget.

The real HAProxy reads the config in tests/tools/test_proxy_config.py; it drains a real server under load in
tests/integration/test_stop_under_load.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving import drain

POD = {"inference_address": "http://0.0.0.0:8080", "grpc_inference_address": "0.0.0.0", "grpc_inference_port": "7070"}


def test_inference_moves_behind_the_proxy_and_nothing_else_changes():
    props = {**POD, "management_address": "http://127.0.0.1:8081", "metrics_address": "http://0.0.0.0:8082"}
    private, routes = drain.behind_proxy(props, 41000, 42000)
    assert routes == [
        drain.Route("http", "0.0.0.0:8080", "127.0.0.1:41000", h2=False),
        drain.Route("grpc", "0.0.0.0:7070", "127.0.0.1:42000", h2=True),
    ]
    assert private["inference_address"] == "http://127.0.0.1:41000"
    assert (private["grpc_inference_address"], private["grpc_inference_port"]) == ("127.0.0.1", "42000")
    assert {k: v for k, v in private.items() if k in props and v == props[k]}.keys() == {"management_address", "metrics_address"}


def test_an_address_the_proxy_cannot_take_is_refused_by_name():
    with pytest.raises(ValueError, match="https://0.0.0.0:8443"):
        drain.behind_proxy({**POD, "inference_address": "https://0.0.0.0:8443"}, 1, 2)


def test_error_files_are_json_and_a_503_says_when_to_retry():
    text = drain.error_response(503, "Service Unavailable", "retry")
    head, body = text.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 503 Service Unavailable\r\n") and f"Retry-After: {drain.RETRY_AFTER_S}" in head
    assert f"Content-Length: {len(body.encode())}" in head
    assert json.loads(body) == {"code": 503, "type": "ServiceUnavailable", "message": "retry"}
    assert "Retry-After" not in drain.error_response(502, "Bad Gateway", "x")


def test_config_binds_the_public_addresses_and_serves_grpc_over_http2(tmp_path):
    _, routes = drain.behind_proxy(POD, 41000, 42000)
    text = drain.haproxy_config(routes, tmp_path, hard_stop_s=8, server_timeout_s=120, keep_alive_s=1)
    assert "bind 0.0.0.0:8080\n" in text and "bind 0.0.0.0:7070 proto h2\n" in text
    assert "server torchserve 127.0.0.1:42000 proto h2" in text and "server torchserve 127.0.0.1:41000\n" in text
    assert "option idle-close-on-response" in text and "hard-stop-after 8s" in text
    assert f"stats socket {tmp_path / 'haproxy.sock'}" in text and "timeout http-keep-alive 1s" in text
    assert drain.WORKER_DIED in text and "Retry-After" in text


STATS = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,req_tot,
http,FRONTEND,,,3,8,,120,117,
torchserve-http,torchserve,0,0,2,8,,117,,
torchserve-http,BACKEND,1,2,2,8,,117,,
grpc,FRONTEND,,,2,2,,2,40,
torchserve-grpc,torchserve,0,0,1,2,,40,,
torchserve-grpc,BACKEND,0,0,1,2,,40,,
"""


def test_stats_count_requests_at_the_frontends_and_in_flight_at_the_backends():
    # Frontend sessions are connections (keep-alive ones included), so they are not what is in flight.
    assert drain.parse_stats(STATS) == drain.Traffic(requests=157, in_flight=4)


def test_the_quiet_wait_gets_what_finishing_and_torchserve_leave_of_stop_timeout():
    assert drain.quiet_budget(8) == 8 - drain.TORCHSERVE_STOP_S - drain.FINISH_S
    assert drain.quiet_budget(1) == 0


def test_a_missing_haproxy_names_the_command_that_installs_it(monkeypatch):
    monkeypatch.setattr(drain.shutil, "which", lambda _: None)
    monkeypatch.setattr(drain.Path, "exists", lambda _: False)
    with pytest.raises(FileNotFoundError, match="make install-proxy"):
        drain.haproxy_bin()


def test_the_drain_marker_turns_readiness_false_and_records_a_finished_wait(tmp_path: Path):
    proxy = drain.Proxy(tmp_path)
    assert not proxy.draining() and not proxy.drained()
    proxy.mark("draining")
    assert proxy.draining() and not proxy.drained()
    proxy.mark("drained")
    assert proxy.draining() and proxy.drained()
