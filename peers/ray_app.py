"""The classifier behind Ray Serve: a benchmark and a migration proof, not a second product.

    .venv-ray/bin/python -m peers.ray_app --mar model_store/classifier.mar --port 8030

``POST /predictions/classifier`` with the raw image as the body and the seed in an ``X-Seed`` header, as our
TorchServe; the answer is our JSON with our status codes. The model, its model-config and its version come from the
archive our server serves (peers/archive.py), and so do the batching defaults: the archive's ``batchSize`` and
``maxBatchDelay`` become ``@serve.batch``'s ``max_batch_size`` and ``batch_wait_timeout_s``.

Ray runs here as a private single-node cluster on loopback: ``num_cpus=2``, a bounded object store, no dashboard.
The batched method never raises for a refused image (an exception there would fail every caller of the batch): the
core answers the batch with one ``Answer`` per request, and each caller turns its own into a Response, 200 or 4xx.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from classifier.service import Answer
from classifier.settings import usable_cpus
from peers import archive

REPO = Path(__file__).resolve().parent.parent
# The object store holds nothing large here (an image travels in the HTTP request, not as a Ray object), so it is kept
# near Ray's minimum instead of its default of 30 % of the machine's memory.
OBJECT_STORE_BYTES = 128 * 1024 * 1024


@serve.deployment
class Classifier:
    def __init__(self, mar: str, replicas: int, threads: int | None, batch_size: int, batch_wait_s: float):
        self.served = archive.load(Path(mar), replicas, threads)
        self.pool = ThreadPoolExecutor(self.served.threads, thread_name_prefix="preprocess")
        self.answer_batch.set_max_batch_size(batch_size)
        self.answer_batch.set_batch_wait_timeout_s(batch_wait_s)

    def _answer(self, uploads: list[tuple[bytes, str | None]]) -> list[Answer]:
        # A batch's images decode in parallel, as in the TorchServe handler (Pillow releases the GIL).
        items = list(self.pool.map(lambda upload: self.served.service.prepare(*upload), uploads))
        return self.served.service.answer(items)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def answer_batch(self, uploads: list[tuple[bytes, str | None]]) -> list[Answer]:
        # Off the replica's event loop, so that requests keep arriving (and queueing for the next batch) meanwhile.
        return await asyncio.get_running_loop().run_in_executor(None, self._answer, uploads)

    async def __call__(self, request: Request) -> Response:
        answer = await self.answer_batch((await request.body(), request.headers.get(archive.SEED_HEADER)))
        return Response(answer.json(), status_code=answer.code, media_type="application/json")


def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mar", type=Path, required=True, help="the archive our TorchServe serves (make archive)")
    parser.add_argument("--port", type=int, default=8030)
    parser.add_argument("--replicas", type=int, default=1, help="deployment replicas (docs/peers.md: 1 on 2 cores)")
    parser.add_argument("--threads", type=int, help="the backend's threads per replica (default: cores / replicas)")
    parser.add_argument("--batch-size", type=int, help="max_batch_size (default: the archive's batchSize)")
    parser.add_argument("--batch-wait", type=float, help="batch_wait_timeout_s (default: the archive's maxBatchDelay)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    batch_size, wait = archive.batching(args.mar, args.batch_size, args.batch_wait)
    cores = usable_cpus()
    # The replicas import peers and classifier from this checkout: Ray's workers inherit the raylet's environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=cores,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    # Each replica reserves its share of the cores, so Ray sets its OMP_NUM_THREADS to the same share.
    app = Classifier.options(
        num_replicas=args.replicas,
        ray_actor_options={"num_cpus": cores / args.replicas},
        max_ongoing_requests=max(2 * batch_size, 8),
    ).bind(str(args.mar.resolve()), args.replicas, args.threads, batch_size, wait)
    serve.run(app, name="classifier", route_prefix=archive.ROUTE)
    logging.info("ray serve: classifier on http://127.0.0.1:%d%s", args.port, archive.ROUTE)
    # serve.run returns once the replicas are up; the cluster lives as long as this driver.
    stop = asyncio.Event()

    async def wait_for_signal() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(wait_for_signal())
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
