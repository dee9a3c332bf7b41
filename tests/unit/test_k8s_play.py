"""The pure parts of deploy/k8s_play.py (`make k8s-play`), which runs the CPU overlay's pod under podman kube play."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("k8s_play", REPO / "deploy" / "k8s_play.py")
k8s_play = importlib.util.module_from_spec(spec)
spec.loader.exec_module(k8s_play)

PORTS = [
    {"name": "http", "containerPort": 8080},
    {"name": "grpc", "containerPort": 7070},
    {"name": "metrics", "containerPort": 8082},
]
DEPLOYMENT = {
    "kind": "Deployment",
    "metadata": {"name": "resnet-classifier"},
    "spec": {"template": {"spec": {"containers": [{"name": "torchserve", "ports": PORTS}]}}},
}
RENDERED = [{"kind": "Namespace"}, {"kind": "ConfigMap", "metadata": {"name": "cm"}}, DEPLOYMENT, {"kind": "Service"}]


def test_only_the_published_ports_change_and_only_onto_loopback():
    configmap, deployment = k8s_play.playable(RENDERED, {"http": 41000, "grpc": 42000})
    assert configmap["metadata"]["name"] == "cm"
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "hostIP": "127.0.0.1", "hostPort": 41000},
        {"name": "grpc", "containerPort": 7070, "hostIP": "127.0.0.1", "hostPort": 42000},
        {"name": "metrics", "containerPort": 8082},
    ]
    assert "hostPort" not in PORTS[0], "the rendered objects are left as they were"


def test_what_podman_cannot_play_is_refused_by_name():
    with pytest.raises(ValueError, match="ConfigMap"):
        k8s_play.playable([DEPLOYMENT], {"http": 1})
    with pytest.raises(ValueError, match="admin"):
        k8s_play.playable(RENDERED, {"admin": 1})


def test_status_fields_are_read_from_proc_status():
    status = "Name:\tjava\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
    assert k8s_play.status_field(status, "CapEff") == "0000000000000000"
    assert k8s_play.status_field(status, "NoNewPrivs") == "1"


def test_a_new_row_goes_first_in_the_table_under_the_marker():
    text = f"intro\n{k8s_play.ROWS_MARKER}\n\n| a | b |\n|---|---|\n| old | row |\n\nafter\n"
    assert k8s_play.insert_row(text, "| new | row |") == (
        f"intro\n{k8s_play.ROWS_MARKER}\n\n| a | b |\n|---|---|\n| new | row |\n| old | row |\n\nafter\n"
    )


def test_the_docs_page_has_the_table_the_rows_go_into():
    text = (REPO / "docs" / "containers.md").read_text()
    assert k8s_play.ROWS_MARKER in text
    assert "| new |" in k8s_play.insert_row(text, "| new |")
