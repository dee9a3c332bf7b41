"""The handler under KServe's v1 protocol: wrapped in TorchServe's own `kserve` request envelope, as the
frontend wraps it when TS_SERVICE_ENVELOPE=kserve (deploy/kserve/). In-process, no server."""

import base64
import json

import pytest
from ts.torch_handler.request_envelope.kserve import KServeEnvelope

from handlers.classifier_handler import ClassifierHandler
from tests.conftest import encode, random_image
from tests.model.test_handler import make_context


@pytest.fixture(scope="module")
def enveloped(tiny_model_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TS_SERVICE_ENVELOPE", "kserve")
        handler = ClassifierHandler()
        handler.initialize(make_context(tiny_model_dir))
    assert handler.enveloped
    return KServeEnvelope(handler.handle)


def predict(envelope, model_dir, body: dict, headers: dict | None = None):
    """What the frontend hands the worker for POST /v1/models/classifier:predict: one request, JSON as bytes."""
    ctx = make_context(model_dir, headers=[headers or {}])
    out = envelope.handle([{"body": json.dumps(body).encode()}], ctx)
    assert isinstance(out, list) and len(out) == 1  # one response per frontend request
    json.dumps(out[0])  # what TorchServe's worker does with a non-bytes result: it must be JSON-serialisable
    return out[0], ctx.get_response_status(0)[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_instances_in_every_base64_form_get_the_contract(enveloped, tiny_model_dir):
    image = encode(random_image(300, 200, seed=4), "PNG")
    instances = [{"data": b64(image), "seed": 7}, {"data": {"b64": b64(image)}, "seed": 7}, b64(image)]
    out, code = predict(enveloped, tiny_model_dir, {"instances": instances})
    assert code is None or code == 200
    first, second, bare = out["predictions"]
    for answer in (first, second, bare):
        assert set(answer) == {"predictions", "embedding", "crop", "model"} and len(answer["predictions"]) == 2
        assert answer["model"]["name"] == "classifier"
    assert first == second  # same image, same seed: the two encodings are the same request
    assert first["crop"]["seed"] == 7


def test_x_seed_header_applies_to_every_instance(enveloped, tiny_model_dir):
    image = encode(random_image(120, 120, seed=5), "JPEG")
    out, _ = predict(enveloped, tiny_model_dir, {"instances": [{"data": b64(image)}] * 2}, {"X-Seed": "3"})
    assert [a["crop"]["seed"] for a in out["predictions"]] == [3, 3]


def test_a_bad_instance_is_an_error_object_beside_the_good_ones(enveloped, tiny_model_dir):
    image = encode(random_image(90, 90, seed=6), "PNG")
    out, code = predict(enveloped, tiny_model_dir, {"instances": [{"data": b64(image)}, {"data": "bm90IGJhc2U2NA"}]})
    good, bad = out["predictions"]
    assert code is None or code == 200
    assert "predictions" in good
    assert bad["code"] == 400 and bad["type"] == "InvalidInput" and "not valid base64" in bad["message"]


def test_all_instances_bad_sets_the_request_status(enveloped, tiny_model_dir):
    out, code = predict(enveloped, tiny_model_dir, {"instances": [{"data": b64(b"not an image at all")}]})
    assert code == 400
    assert out["predictions"][0]["code"] == 400


def test_no_instances_is_a_400_naming_the_expected_body(enveloped, tiny_model_dir):
    from ts.utils.util import PredictionException

    with pytest.raises(PredictionException, match="instances") as info:
        predict(enveloped, tiny_model_dir, {"inputs": []})
    assert info.value.error_code == 400
