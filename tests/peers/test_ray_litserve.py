"""LitServe and Ray Serve answer exactly as our TorchServe does: same archive, same image, same seed, same JSON.

Each peer serves the very classifier.mar our `server` fixture serves (peers/archive.py), with its batching taken from
that archive's model-config (batchSize 4, maxBatchDelay 200 ms in the tests). The parity requests go one after
another, so each is a batch of one on every side (a batched convolution may round differently), as in
test_parity.py. Run with `make test-peers`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests

from serving.launcher import free_port
from tests.peers.processes import PeerServer, peer_server

# The same good images and the same bad inputs as the Triton test, and our server's answer, asked the same way.
from tests.peers.test_parity import BAD_INPUTS, assert_answers_as_ours, good_images, ours  # noqa: F401

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROUTE = "/predictions/classifier"
PEERS = ["litserve", "ray"]


@pytest.fixture(scope="session")
def litserve(model_store, tmp_path_factory) -> Iterator[PeerServer]:
    port = free_port()
    args = ["--mar", str(model_store / "classifier.mar"), "--port", str(port)]
    log = tmp_path_factory.mktemp("litserve") / "litserve.log"

    def ready(url: str) -> bool:
        return requests.get(f"{url}/health", timeout=2).status_code == 200

    with peer_server(".venv-litserve", "peers.litserve_app", args, port, log, ready) as peer:
        yield peer


@pytest.fixture(scope="session")
def ray(model_store, tmp_path_factory) -> Iterator[PeerServer]:
    port = free_port()
    args = ["--mar", str(model_store / "classifier.mar"), "--port", str(port)]
    log = tmp_path_factory.mktemp("ray") / "ray.log"

    def ready(url: str) -> bool:
        # The proxy lists an application's route once its replicas are up.
        resp = requests.get(f"{url}/-/routes", timeout=2)
        return resp.status_code == 200 and ROUTE in resp.json()

    with peer_server(".venv-ray", "peers.ray_app", args, port, log, ready) as peer:
        yield peer


@pytest.fixture(params=PEERS)
def peer(request) -> PeerServer:
    return request.getfixturevalue(request.param)


def peer_answer(peer: PeerServer, image: bytes, seed: int | str | None) -> tuple[int, dict]:
    headers = {} if seed is None else {"X-Seed": str(seed)}
    resp = requests.post(peer.url + ROUTE, data=image, headers=headers, timeout=60)
    return resp.status_code, resp.json()


def test_peer_answers_as_our_server(server, peer, good_images):  # noqa: F811
    assert_answers_as_ours(server, lambda image, seed: peer_answer(peer, image, seed), good_images)


@BAD_INPUTS
def test_peer_refuses_what_we_refuse_with_our_answer(server, peer, image, seed):
    code, expected = ours(server, image, seed)
    assert 400 <= code < 500, expected
    # Our status and our error object, whole: {"code", "type", "message"}.
    assert peer_answer(peer, image, seed) == (code, expected)


def test_peer_fails_only_the_bad_item_of_a_batch(server, peer, good_images):  # noqa: F811
    """Four requests at once fill one batch (the archive's batchSize 4, 200 ms delay): one bad, three good."""
    goods = list(good_images.values())[:3]
    bodies = [*goods, b"this is not an image"]
    results: list[tuple[int, dict] | None] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        start.wait()
        results[i] = peer_answer(peer, bodies[i], 42)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for image, result in zip(goods, results[:3], strict=True):
        code, expected = ours(server, image, 42)
        assert result is not None and result[0] == 200, result
        # Batched with others, the probabilities may round differently; the crop and the model are the same.
        assert (result[1]["crop"], result[1]["model"]) == (expected["crop"], expected["model"])
        assert [p["label"] for p in result[1]["predictions"]] == [p["label"] for p in expected["predictions"]]
    assert results[3] == ours(server, b"this is not an image", 42)
