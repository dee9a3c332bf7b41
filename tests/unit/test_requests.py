import pytest
import torch

from classifier.backends import cpu_reason, select_device
from classifier.settings import HandlerSettings
from handlers.requests import RequestError, extract_image, find_seed, parse_seed


@pytest.mark.parametrize("raw,expected", [(None, None), (b"42", 42), ("7", 7), (0, 0), (bytearray(b" 9 "), 9)])
def test_parse_seed(raw, expected):
    assert parse_seed(raw) == expected


@pytest.mark.parametrize("raw", [b"abc", b"-1", str(2**64).encode(), b"1.5"])
def test_bad_seed_names_the_valid_range(raw):
    with pytest.raises(RequestError, match="seed must be an integer"):
        parse_seed(raw)


def test_extract_image_from_body_data_and_form_fields():
    assert extract_image({"body": bytearray(b"abc")}) == b"abc"
    assert extract_image({"data": b"xyz", "seed": b"1"}) == b"xyz"
    assert extract_image({"file": b"f"}) == b"f"


@pytest.mark.parametrize(
    "request_,code,needle",
    [
        ({"body": {"image": "..."}}, 415, "JSON"),
        ({"body": "plain text"}, 415, "text"),
        ({"seed": b"1"}, 400, "no image"),
    ],
)
def test_extract_image_refuses_what_is_not_image_bytes(request_, code, needle):
    with pytest.raises(RequestError, match=needle) as info:
        extract_image(request_)
    assert info.value.code == code


def test_settings_split_cores_between_workers():
    assert HandlerSettings.from_model_config({"minWorkers": 2, "handler": {}}, cpu_count=2).threads == 1
    assert HandlerSettings.from_model_config({"minWorkers": 1}, cpu_count=2).threads == 2
    assert HandlerSettings.from_model_config({"handler": {"threads": 3}}, cpu_count=2).threads == 3


def test_settings_reject_unknown_keys_and_bad_crop_mode():
    with pytest.raises(ValueError, match="unknown handler settings"):
        HandlerSettings.from_model_config({"handler": {"thread": 1}}, 2)
    with pytest.raises(ValueError, match="'random' and 'center'"):
        HandlerSettings.from_model_config({"handler": {"crop_mode": "left"}}, 2)


@pytest.mark.parametrize(
    "gpu_id,cuda,expected",
    [
        (None, True, "cpu"),
        (None, False, "cpu"),
        ("", True, "cpu"),
        (0, False, "cpu"),  # assigned a GPU but CUDA is unusable: serve on CPU rather than crash
        (0, True, "cuda:0"),
        ("1", True, "cuda:1"),
    ],
)
def test_device_selection(gpu_id, cuda, expected):
    assert select_device(gpu_id, cuda) == torch.device(expected)
    # Every CPU choice comes with a reason to log (the GPU image on a host without a GPU says why).
    reason = cpu_reason(gpu_id, cuda)
    assert (reason is None) == (expected != "cpu")
    assert reason is None or ("assigned no GPU" in reason if gpu_id in (None, "") else "no usable CUDA" in reason)


def test_find_seed_prefers_the_input_then_any_case_of_x_seed_header():
    assert find_seed({"seed": b"1"}, {"X-Seed": "2"}) == b"1"
    assert find_seed({}, {"X-SEED": "3", "body": {"content-type": ""}}) == "3"
    assert find_seed({}, {"Accept": "*/*"}) is None and find_seed({}, None) is None


def test_oversized_body_is_413_naming_sizes():
    with pytest.raises(RequestError, match="11 bytes, over the limit of 10 bytes") as info:
        extract_image({"body": b"x" * 11}, max_bytes=10)
    assert info.value.code == 413
    assert extract_image({"body": b"x" * 10}, max_bytes=10) == b"x" * 10
