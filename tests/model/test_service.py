"""classifier.service on the tiny model: the one home of an image's trip that every consumer calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from classifier.service import ClassifierService, ItemError, Outputs, Prepared
from classifier.versions import model_identity
from tests.conftest import REPO, encode, random_image


@pytest.fixture(scope="module")
def service(tiny_model_dir) -> ClassifierService:
    config = yaml.safe_load((REPO / "model-config.yaml").read_text())
    return ClassifierService.load(tiny_model_dir, config, backend="eager", threads=2)


GOOD = encode(random_image(200, 150, seed=3), "JPEG", quality=90)


def test_prepare_gives_the_tensor_the_crop_and_what_decoding_cost(service):
    item = service.prepare(GOOD, b"42")
    assert isinstance(item, Prepared)
    assert tuple(item.tensor.shape) == (3, service.preprocess.input_size, service.preprocess.input_size)
    assert item.crop["mode"] == "random" and item.crop["seed"] == 42 and len(item.crop["box"]) == 4
    assert item.decode_seconds > 0


@pytest.mark.parametrize(
    ("body", "seed", "code", "cause", "needle"),
    [
        (GOOD, "x", 400, "invalid_seed", "seed must be an integer"),
        (b"not an image", None, 400, "undecodable_image", "not an image"),
        (b"", None, 400, "undecodable_image", "empty body"),
        (b"x" * (10 * 2**20 + 1), None, 413, "body_too_large", "over the limit"),
    ],
)
def test_a_bad_request_is_its_error_with_status_and_cause(service, body, seed, code, cause, needle):
    item = service.prepare(body, seed)
    assert isinstance(item, ItemError) and item.code == code and item.cause == cause and needle in str(item)


def test_answers_come_back_in_order_with_each_error_in_its_place(service):
    items = [service.prepare(GOOD, 1), service.prepare(b"junk"), service.prepare(GOOD, 2)]
    answers = service.answer(items)
    assert [a.code for a in answers] == [200, 400, 200]
    assert [a.ok for a in answers] == [True, False, True]
    assert answers[1].body["type"] == "InvalidInput" and answers[1].error is items[1]
    assert answers[0].body["crop"]["seed"] == 1 and answers[2].body["crop"]["seed"] == 2
    for answer in (answers[0], answers[2]):
        assert list(answer.body) == ["predictions", "embedding", "crop", "model"]  # the model added last, compatibly
        assert answer.body["model"] == model_identity(service.model_dir).as_dict() == service.identity.as_dict()
        assert len(answer.body["predictions"]) == service.settings.topk


def test_a_batch_answers_each_image_as_it_would_alone(service):
    alone = [service.answer([service.prepare(GOOD, seed)])[0].body for seed in (5, 6)]
    together = [a.body for a in service.answer([service.prepare(GOOD, 5), service.prepare(GOOD, 6)])]
    for one, both in zip(alone, together, strict=True):
        assert one["crop"] == both["crop"]
        assert [p["index"] for p in one["predictions"]] == [p["index"] for p in both["predictions"]]
        for x, y in zip(one["predictions"], both["predictions"], strict=True):
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-5)


def test_a_batch_of_only_errors_runs_no_network(service):
    items = [service.prepare(b"junk"), service.prepare(GOOD, "-1")]
    assert service.predict(items) == Outputs(None, None)
    assert [a.code for a in service.answer(items)] == [400, 400]


def test_prepare_holds_no_state_between_requests(service):
    """The handler prepares a batch on a thread pool: the same requests give the same items, in any order."""
    seeds = list(range(16))
    alone = [service.prepare(GOOD, s).crop for s in seeds]
    with ThreadPoolExecutor(4) as pool:
        threaded = [item.crop for item in pool.map(lambda s: service.prepare(GOOD, s), seeds)]
    assert threaded == alone


def test_overrides_replace_the_model_configs_settings(tiny_model_dir):
    config = yaml.safe_load((REPO / "model-config.yaml").read_text())
    centre = ClassifierService.load(tiny_model_dir, config, backend="eager", threads=1, crop_mode="center")
    assert centre.settings.crop_mode == "center" and centre.settings.threads == 1 and centre.backend.name == "eager"
    item = centre.prepare(GOOD, 99)
    assert isinstance(item, Prepared) and item.crop["seed"] is None  # a centre crop has no seed, whatever was asked
