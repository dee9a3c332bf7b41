"""The four config.properties that TorchServe reads as they are agree on everything but addresses and paths.

They stay four plain files, not generated from one base: `make serve`, `docker build`, `kubectl apply -k` and
KServe's storageUri take them as they are, with no build step before, and each one's comments explain its own
choices. This test keeps them one configuration: every other difference is listed below with its reason, and the
limits are pinned to classifier/limits.py.
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

from classifier.limits import MAX_BODY_BYTES, MAX_REQUEST_BYTES
from classifier.versions import MODEL_NAME
from serving.launcher import read_properties
from tests.conftest import REPO

CONFIGS = {
    "local": REPO / "config.properties",  # make serve, and the tests' servers
    "image": REPO / "docker" / "config.properties",
    "pod": REPO / "deploy" / "k8s" / "base" / "config.properties",
    "kserve": REPO / "deploy" / "kserve" / "config.properties",
}
# Where each listener binds and where the files are: a developer's machine, the container, the pod and KServe's
# storage layout differ there by design (their ports are checked below).
ADDRESSES = {
    "inference_address",
    "management_address",
    "metrics_address",
    "grpc_inference_address",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_port",
}
PATHS = {"model_store", "allowed_urls", "metrics_config"}
# Keys only one config has, and keys one config leaves out, each with why.
ONLY_IN = {
    "kserve": {
        "enable_envvars_config": "KServe chooses the request envelope with TS_SERVICE_ENVELOPE, read only with this on",
        "model_snapshot": "KServe's stock wrapper reads the model list from it (and it wins over load_models)",
    },
}
LEFT_OUT = {
    "kserve": {"default_workers_per_model": "model_snapshot sets the model's workers itself (minWorkers, maxWorkers)"},
}
# Values only the local config has, with why.
LOCAL_ONLY = {
    "enable_model_api": (
        "true",
        "make rollout registers a second version through the management API of make serve; images, pods and KServe "
        "roll out a new image or storageUri instead, and keep registration off",
    ),
}
# Ports that differ from the local config's.
MOVED_PORTS = {
    ("kserve", "inference_address"): (8085, "KServe's stock wrapper takes 8080 and forwards to TorchServe on 8085"),
    ("kserve", "grpc_inference_port"): (7072, "7070 is the stock wrapper's own gRPC port; clients use REST v1"),
}

PROPS = {name: read_properties(path) for name, path in CONFIGS.items()}


def port(props: dict[str, str], key: str) -> int:
    value = props[key]
    return int(value) if value.isdigit() else urlparse(value).port


def test_every_config_has_the_same_keys_but_the_listed_ones():
    common = set(PROPS["local"])
    for name, props in PROPS.items():
        assert set(props) == (common | set(ONLY_IN.get(name, {}))) - set(LEFT_OUT.get(name, {})), name


@pytest.mark.parametrize("key", sorted(set(PROPS["local"]) - ADDRESSES - PATHS))
def test_every_config_has_the_same_value_but_for_addresses_and_paths(key):
    values = {name: props[key] for name, props in PROPS.items() if key in props}
    if key in LOCAL_ONLY:
        assert values.pop("local") == LOCAL_ONLY[key][0]
    assert len(set(values.values())) == 1, values


def test_registration_is_off_wherever_a_new_version_is_a_new_image_or_storage_uri():
    assert {name: props["enable_model_api"] for name, props in PROPS.items()} == {
        "local": "true",
        "image": "false",
        "pod": "false",
        "kserve": "false",
    }


def test_no_config_lets_the_server_download_a_model():
    """CVE-2023-43654: allowed_urls matches only file:// paths of archives in the model store, never http(s)."""
    import re

    for name, props in PROPS.items():
        pattern = re.compile(props["allowed_urls"], re.IGNORECASE)  # TorchServe matches case-insensitively
        store = props["model_store"] if props["model_store"].startswith("/") else "/repo/" + props["model_store"]
        assert pattern.fullmatch(f"file://{store}/classifier-2.mar"), name
        for url in (
            "http://169.254.169.254/latest/meta-data",
            f"https://example.com{store}/classifier.mar",
            f"file:///etc/passwd#{store}/x.mar",
            f"file:///etc/passwd?{store}/x.mar",
        ):
            assert not pattern.fullmatch(url), (name, url)


def test_ports_are_the_same_but_the_listed_ones_and_management_stays_on_loopback():
    for name, props in PROPS.items():
        for key in ADDRESSES - {"grpc_inference_address", "grpc_management_address"}:
            expected = MOVED_PORTS.get((name, key), (port(PROPS["local"], key), ""))[0]
            assert port(props, key) == expected, (name, key)
        # Management can register, scale and delete models: reachable from inside the host, pod or container only.
        assert urlparse(props["management_address"]).hostname == "127.0.0.1", name
        assert props["grpc_management_address"] == "127.0.0.1", name


def test_the_frontends_request_cap_is_the_core_limit():
    for name, props in PROPS.items():
        assert int(props["max_request_size"]) == MAX_REQUEST_BYTES > MAX_BODY_BYTES, name


def test_the_kserve_snapshot_names_the_archive_that_make_archive_writes():
    snapshot = json.loads(PROPS["kserve"]["model_snapshot"])
    assert list(snapshot["models"]) == [MODEL_NAME]
    # TorchServe registers the archive under its manifest's version whatever the snapshot's key says
    # (tests/integration/test_kserve.py serves an archive whose version is not the key).
    [entry] = snapshot["models"][MODEL_NAME].values()
    assert entry["marName"] == f"{MODEL_NAME}.mar" and entry["defaultVersion"] is True
