"""The handler class run in-process with TorchServe's own Context: no server, no Java."""

import json

import pytest
import torch
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.utils.util import list_classes_from_module

from handlers import classifier_handler
from handlers.classifier_handler import ClassifierHandler
from tests.conftest import REPO, encode, random_image


def test_torchserve_finds_exactly_one_handler_class():
    """TorchServe's loader takes the one class the handler module defines; a second one fails every model load."""
    assert list_classes_from_module(classifier_handler) == [ClassifierHandler]


def metrics_cache() -> MetricsCacheYamlImpl:
    """TorchServe's own metrics cache, built from the metrics config the server ships with, as the worker builds it."""
    cache = MetricsCacheYamlImpl(config_file_path=str(REPO / "monitoring" / "ts-metrics.yaml"))
    cache.initialize_cache()
    cache.model_name = "classifier"
    return cache


def make_context(model_dir, handler_settings=None, batch=1, gpu=None, headers=None):
    ctx = Context(
        "classifier",
        str(model_dir),
        {"model": {"serializedFile": "model.pt2"}},
        batch,
        gpu,
        "0.12.0",
        metrics=metrics_cache(),
        # eager, not the shipped default: the CLI tests compare these answers with `--backend eager`'s.
        model_yaml_config={"minWorkers": 1, "handler": {"backend": "eager", **(handler_settings or {})}},
    )
    ctx.request_processor = [RequestProcessor((headers or [{}] * batch)[i]) for i in range(batch)]
    ctx.request_ids = {i: f"req-{i}" for i in range(batch)}  # as TorchServe's worker sets them
    return ctx


@pytest.fixture(scope="module")
def handler(tiny_model_dir):
    h = ClassifierHandler()
    h.initialize(make_context(tiny_model_dir))
    return h


def run(handler, model_dir, requests, headers=None):
    ctx = make_context(model_dir, batch=len(requests), headers=headers)
    out = handler.handle(requests, ctx)
    return [json.loads(body) for body in out], [ctx.get_response_status(i) for i in range(len(requests))]


def test_response_contract(handler, tiny_model_dir):
    [body], [(code, _)] = run(handler, tiny_model_dir, [{"body": encode(random_image(300, 200), "PNG")}])
    assert code == 200
    assert set(body) == {"predictions", "embedding", "crop"}
    preds = body["predictions"]
    labels = json.loads((tiny_model_dir / "index_to_name.json").read_text())
    assert len(preds) == 2 and preds[0]["probability"] >= preds[1]["probability"]
    for p in preds:
        assert labels[str(p["index"])] == p["label"] and 0 <= p["probability"] <= 1
    assert body["embedding"]["dim"] == 2048 and body["embedding"]["variance"] >= 0
    assert body["crop"]["mode"] == "random" and isinstance(body["crop"]["seed"], int)
    left, top, right, bottom = body["crop"]["box"]
    assert (right - left, bottom - top) == (100, 100)


def test_same_seed_gives_identical_answer_and_reported_seed_reproduces(handler, tiny_model_dir):
    image = encode(random_image(400, 400, seed=9), "JPEG")
    a, _ = run(handler, tiny_model_dir, [{"body": image, "seed": b"42"}])
    b, _ = run(handler, tiny_model_dir, [{"body": image, "seed": b"42"}])
    assert a == b and a[0]["crop"]["seed"] == 42
    [unseeded], _ = run(handler, tiny_model_dir, [{"body": image}])
    [replay], _ = run(handler, tiny_model_dir, [{"body": image, "seed": str(unseeded["crop"]["seed"]).encode()}])
    assert replay == unseeded


def test_seed_from_x_seed_header_equals_seed_form_field(handler, tiny_model_dir):
    image = encode(random_image(300, 300, seed=4), "PNG")
    by_header, statuses = run(
        handler, tiny_model_dir, [{"body": image}, {"body": image}], headers=[{"X-Seed": "5"}, {"x-seed": b"5"}]
    )
    by_field, _ = run(handler, tiny_model_dir, [{"data": image, "seed": "5"}, {"data": image, "seed": b"5"}])
    assert by_header[0] == by_header[1] == by_field[0] == by_field[1] and by_field[0]["crop"]["seed"] == 5
    bad, statuses = run(handler, tiny_model_dir, [{"body": image}], headers=[{"X-Seed": "five"}])
    assert statuses[0][0] == 400 and "seed" in bad[0]["message"]


def test_bad_item_fails_only_itself_in_a_batch(handler, tiny_model_dir):
    good = encode(random_image(120, 90, seed=1), "PNG")
    requests = [
        {"body": good, "seed": b"1"},
        {"body": b"not an image"},
        {"data": good, "seed": b"1"},
        {"body": {"json": True}},
        {"body": good, "seed": b"oops"},
    ]
    bodies, statuses = run(handler, tiny_model_dir, requests)
    assert [s[0] for s in statuses] == [200, 400, 200, 415, 400]
    assert bodies[0] == bodies[2]  # same image and seed, different positions in the batch
    assert "not an image" in bodies[1]["message"] and bodies[1]["code"] == 400
    assert "JSON" in bodies[3]["message"]
    assert "seed" in bodies[4]["message"]
    # A batch result equals the single-request result: batching does not change answers.
    [single], _ = run(handler, tiny_model_dir, [{"body": good, "seed": b"1"}])
    assert single["crop"] == bodies[0]["crop"]
    for a, b in zip(single["predictions"], bodies[0]["predictions"], strict=True):
        assert a["index"] == b["index"] and a["probability"] == pytest.approx(b["probability"], abs=1e-4)


def test_batch_of_only_bad_items(handler, tiny_model_dir):
    bodies, statuses = run(handler, tiny_model_dir, [{"body": b""}, {"body": b"\x89PNG\r\n"}])
    assert [s[0] for s in statuses] == [400, 400]
    assert "empty body" in bodies[0]["message"]


def test_center_mode_is_deterministic(tiny_model_dir):
    h = ClassifierHandler()
    h.initialize(make_context(tiny_model_dir, {"crop_mode": "center"}))
    image = encode(random_image(500, 300, seed=2), "PNG")
    a = json.loads(h.handle([{"body": image}], make_context(tiny_model_dir))[0])
    b = json.loads(h.handle([{"body": image}], make_context(tiny_model_dir))[0])
    assert a == b and a["crop"] == {"mode": "center", "seed": None, "box": [325, 175, 425, 275]}


def test_gpu_assignment_without_cuda_falls_back_to_cpu(tiny_model_dir):
    h = ClassifierHandler()
    h.initialize(make_context(tiny_model_dir, gpu=0))
    assert h.device == (torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu"))


def test_an_unexpected_preprocessing_failure_fails_only_its_item(handler, tiny_model_dir, monkeypatch):
    """A bug of ours on one image is a 500 for that image only, with a request id and no internals in the message."""
    import classifier.service as module  # where the handler's service preprocesses

    real = module.preprocess_bytes

    def flaky(data, *args, **kwargs):
        if data.startswith(b"BOOM"):
            raise ZeroDivisionError("simulated")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(module, "preprocess_bytes", flaky)
    good = encode(random_image(90, 90, seed=8), "PNG")
    bodies, statuses = run(handler, tiny_model_dir, [{"body": good}, {"body": b"BOOM" + good}])
    assert [s[0] for s in statuses] == [200, 500]
    assert bodies[1]["type"] == "InternalServerError" and bodies[1]["code"] == 500
    assert "request id req-1" in bodies[1]["message"] and "simulated" not in bodies[1]["message"]
    assert len(bodies[0]["predictions"]) == 2
