"""Each peer server answers exactly as our TorchServe does: same image, same seed, same model, same JSON.

Requests go one after another, so each is a batch of one on both sides (a batched convolution may round
differently), as in tests/integration/test_cli_parity.py. Run with `make test-peers`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from benchmarks.running import run_locust
from peers import v2
from tests.conftest import encode, random_image

pytestmark = [pytest.mark.server, pytest.mark.slow]

TRUNCATED_JPEG = encode(random_image(320, 240, seed=5), "JPEG")[:600]
# What our server refuses, for every peer's refusal test: a body that is no image, a cut JPEG, two bad seeds.
BAD_INPUTS = pytest.mark.parametrize(
    ("image", "seed"),
    [
        (b"this is not an image", 42),
        (TRUNCATED_JPEG, 42),
        (encode(random_image(64, 64, seed=3), "PNG"), "abc"),
        (encode(random_image(64, 64, seed=3), "PNG"), -1),
    ],
    ids=["text", "truncated-jpeg", "seed-not-int", "seed-negative"],
)


def ours(server, image: bytes, seed: int | None) -> tuple[int, dict]:
    headers = {} if seed is None else {"X-Seed": str(seed)}
    resp = requests.post(f"{server.inference_url}/predictions/classifier", data=image, headers=headers, timeout=60)
    return resp.status_code, resp.json()


def triton_answer(peer, image: bytes, seed: int | None) -> tuple[int, dict]:
    body, headers = v2.request(image, seed)
    resp = requests.post(peer.url + v2.infer_path("classifier"), data=body, headers=headers, timeout=60)
    return v2.answer(resp.status_code, resp.content)


@pytest.fixture(scope="module")
def good_images(images) -> dict[str, bytes]:
    found = {f"synthetic.{ext}": path.read_bytes() for ext, path in images.items()}
    found["rgba.png"] = encode(random_image(70, 300, seed=21, mode="RGBA"), "PNG")
    found["photo.webp"] = encode(random_image(900, 600, seed=22), "WEBP")
    return found


def assert_answers_as_ours(server, answer: Callable[[bytes, int | None], tuple[int, dict]], good_images) -> None:
    """Each good image, with seeds 42 and 7, gets exactly our JSON from ``answer`` (a peer's (status, JSON))."""
    for name, image in good_images.items():
        for seed in (42, 7):
            code, expected = ours(server, image, seed)
            assert code == 200, (name, expected)
            assert answer(image, seed) == (200, expected), name
        # Without a seed, the peer draws one and reports it; sending that seed to our server replays the answer.
        code, drawn = answer(image, None)
        assert code == 200 and drawn["crop"]["seed"] is not None, drawn
        assert ours(server, image, drawn["crop"]["seed"]) == (200, drawn), name


def test_triton_answers_as_our_server(server, triton, good_images):
    assert_answers_as_ours(server, lambda image, seed: triton_answer(triton, image, seed), good_images)


@BAD_INPUTS
def test_triton_refuses_what_we_refuse_with_our_message(server, triton, image, seed):
    code, expected = ours(server, image, seed)
    assert 400 <= code < 500, expected
    status, body = triton_answer(triton, image, seed)
    # PyTriton turns every error of the inference callable into a TritonModelException, which Triton answers with
    # 500 (docs/peers.md): never a 200, and the message is ours, naming the cause.
    assert status == 500, body
    assert expected["message"] in body["error"], body


def test_a_refused_image_among_concurrent_requests_fails_alone(server, triton, good_images):
    """One request per call (--max-batch 1): requests in flight together are answered apart, so a bad one takes no
    neighbour down, and each good one still answers as our server does."""
    goods = [(name, image) for name, image in good_images.items()] * 2
    bodies = [*goods[:3], ("text", b"this is not an image"), *goods[3:]]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda item: triton_answer(triton, item[1], 42), bodies))
    for (name, image), (status, body) in zip(bodies, answers, strict=True):
        if name == "text":
            code, expected = ours(server, image, 42)
            assert status == 500 and expected["message"] in body["error"], body
        else:
            assert (status, body) == ours(server, image, 42), name


def test_the_bench_client_speaks_v2_to_triton(triton, images, tmp_path):
    """The one load client of `make bench-peers` (loadtests/locustfile.py --protocol v2) gets and checks our JSON."""
    image_dir = next(iter(images.values())).parent
    result = run_locust(triton.url, 2, 3, image_dir, "classifier", "ours", tmp_path / "v2", ("--protocol", "v2"))
    assert result["requests"] > 0 and result["failures"] == 0, (tmp_path / "v2_failures.csv").read_text()
    assert "/v2/models/classifier/infer" in (tmp_path / "v2_stats.csv").read_text()
    # Checked as stock TorchServe's {label: prob}, every answer fails: the client reads what Triton sent back.
    wrong = run_locust(triton.url, 1, 2, image_dir, "classifier", "stock", tmp_path / "wrong", ("--protocol", "v2"))
    assert wrong["requests"] > 0 and wrong["failures"] == wrong["requests"]
