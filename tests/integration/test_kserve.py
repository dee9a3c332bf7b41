"""KServe's v1 protocol end to end on a real TorchServe: the config that `make kserve-layout` ships
(deploy/kserve/config.properties), the `kserve` envelope switched on the way KServe does it
(TS_SERVICE_ENVELOPE with enable_envvars_config=true), and a client's base64 instances."""

from __future__ import annotations

import base64

import pytest
import requests

from classifier.versions import archive_identity
from serving.launcher import TorchServeProcess
from tests.conftest import REPO
from tests.integration.conftest import server_overrides
from tests.integration.test_http import check_contract

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def kserve_server(model_store, tmp_path_factory):
    overrides = server_overrides(model_store)
    overrides["allowed_urls"] = f"^file://{model_store.resolve()}/.*$"
    # The config names the image's path of the metrics config; outside the image it is the repository's copy.
    overrides["metrics_config"] = str(REPO / "monitoring" / "ts-metrics.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TS_SERVICE_ENVELOPE", "kserve")  # inherited by the frontend and its worker
        ts = TorchServeProcess(REPO / "deploy" / "kserve" / "config.properties", tmp_path_factory.mktemp("kserve"), overrides)
        ts.start(timeout=240)
    try:
        yield ts
    finally:
        ts.stop()


def predict(ts: TorchServeProcess, body: dict) -> requests.Response:
    return requests.post(f"{ts.inference_url}/v1/models/classifier:predict", json=body, timeout=60)


def test_v1_predict_answers_each_instance_with_the_contract(kserve_server, model_store, images):
    png = base64.b64encode(images["png"].read_bytes()).decode()
    jpeg = base64.b64encode(images["jpg"].read_bytes()).decode()
    resp = predict(kserve_server, {"instances": [{"data": png, "seed": 1}, {"data": {"b64": jpeg}}, png]})
    assert resp.status_code == 200, resp.text
    answers = resp.json()["predictions"]
    assert len(answers) == 3
    for answer in answers:
        check_contract(answer)
    assert answers[0]["crop"]["seed"] == 1
    # The archive's own version, not the snapshot's key "1.0": TorchServe registers by the manifest.
    version = archive_identity(model_store / "classifier.mar").version
    assert version != "1.0" and {a["model"]["version"] for a in answers} == {version}


def test_seed_field_of_an_instance_equals_the_x_seed_header(kserve_server, images):
    raw = images["png"].read_bytes()
    enveloped = predict(kserve_server, {"instances": [{"data": base64.b64encode(raw).decode(), "seed": 5}]}).json()
    plain = requests.post(
        f"{kserve_server.inference_url}/v1/models/classifier:predict",
        json={"instances": [{"data": base64.b64encode(raw).decode()}]},
        headers={"X-Seed": "5"},
        timeout=60,
    ).json()
    assert enveloped["predictions"][0]["crop"] == plain["predictions"][0]["crop"]
    assert [p["index"] for p in enveloped["predictions"][0]["predictions"]] == [
        p["index"] for p in plain["predictions"][0]["predictions"]
    ]


def test_bad_base64_is_a_400_naming_the_cause(kserve_server):
    resp = predict(kserve_server, {"instances": [{"data": "aGVsbG8"}]})
    assert resp.status_code == 400, resp.text
    assert "not valid base64" in resp.json()["predictions"][0]["message"]


def test_a_body_without_instances_is_a_400(kserve_server):
    resp = predict(kserve_server, {"inputs": []})
    assert resp.status_code == 400, resp.text
    assert "instances" in resp.text
