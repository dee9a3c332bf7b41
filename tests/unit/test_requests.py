import pytest
import torch

from classifier.backends import cpu_reason, select_device
from classifier.service import ItemError, parse_seed
from classifier.settings import HandlerSettings, cpu_quota, usable_cpus
from handlers.requests import extract_image, find_seed


@pytest.mark.parametrize("raw,expected", [(None, None), (b"42", 42), ("7", 7), (0, 0), (bytearray(b" 9 "), 9)])
def test_parse_seed(raw, expected):
    assert parse_seed(raw) == expected


@pytest.mark.parametrize("raw", [b"abc", b"-1", str(2**64).encode(), b"1.5"])
def test_bad_seed_names_the_valid_range(raw):
    with pytest.raises(ItemError, match="seed must be an integer"):
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
    with pytest.raises(ItemError, match=needle) as info:
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
    with pytest.raises(ItemError, match="11 bytes, over the limit of 10 bytes") as info:
        extract_image({"body": b"x" * 11}, max_bytes=10)
    assert info.value.code == 413
    assert extract_image({"body": b"x" * 10}, max_bytes=10) == b"x" * 10


# ---------------------------------------------------------------- base64 images (KServe v1 instances)
def test_base64_text_and_b64_objects_decode_to_the_image_bytes():
    import base64

    raw = bytes(range(256)) * 3
    assert extract_image({"data": base64.b64encode(raw).decode()}) == raw
    assert extract_image({"data": base64.encodebytes(raw).decode()}) == raw  # MIME-wrapped at 76 columns
    assert extract_image({"data": base64.urlsafe_b64encode(raw).decode()}) == raw
    assert extract_image({"data": {"b64": base64.b64encode(raw).decode()}}) == raw
    assert extract_image(base64.b64encode(raw).decode()) == raw  # a bare instance: {"instances": ["<b64>"]}


@pytest.mark.parametrize(
    "request_,needle",
    [
        ({"data": "aGVsbG8"}, "not valid base64 (Incorrect padding)"),
        ({"data": {"b64": "a!b"}}, "'data.b64' is not valid base64"),
        ({"data": {"b64": ""}}, "'data.b64' is empty"),
    ],
)
def test_bad_base64_is_400_naming_the_field_and_the_cause(request_, needle):
    with pytest.raises(ItemError) as info:
        extract_image(request_)
    assert info.value.code == 400 and needle in str(info.value)


def test_base64_over_the_limit_is_413_before_decoding():
    import base64

    with pytest.raises(ItemError, match="decodes to over 10 bytes") as info:
        extract_image({"data": base64.b64encode(b"x" * 30).decode()}, max_bytes=10)
    assert info.value.code == 413
    assert extract_image({"data": base64.b64encode(b"x" * 10).decode()}, max_bytes=10) == b"x" * 10


def test_a_bare_instance_has_no_seed_field():
    assert find_seed("c2VlZA==", {"X-Seed": "5"}) == "5"  # the string "seed" inside base64 is not a field


# ---------------------------------------------------------------- CPU limit of the container
@pytest.mark.parametrize(
    "args,expected",
    [
        (("200000 100000",), 2.0),
        (("max 100000",), None),
        (("150000 100000",), 1.5),
        ((None, "-1", "100000"), None),
        ((None, "400000", "100000"), 4.0),
        ((None, None, None), None),
    ],
)
def test_cpu_quota_reads_cgroup_v2_and_v1(args, expected):
    assert cpu_quota(*args) == expected


def test_usable_cpus_is_capped_by_the_cgroup_limit(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == cores
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: still one thread
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
