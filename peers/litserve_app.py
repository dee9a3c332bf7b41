"""The classifier behind LitServe: a benchmark and a migration proof, not a second product.

    .venv-litserve/bin/python -m peers.litserve_app --mar model_store/classifier.mar --port 8020

``POST /predictions/classifier`` with the raw image as the body and the seed in an ``X-Seed`` header, as our
TorchServe; the answer is our JSON with our status codes. The model, its model-config and its version come from the
archive our server serves (peers/archive.py), and so do the batching defaults: the archive's ``batchSize`` and
``maxBatchDelay`` become LitServe's ``max_batch_size`` and ``batch_timeout``.

LitServe's batched loop (litserve/loops/simple_loops.py) fails a whole batch when any step raises, HTTPException
included, so a refused image never raises here: ``prepare`` returns its ``ItemError``, the core answers the batch
with one ``Answer`` per item, and ``encode_response`` turns each into its own Response, 200 or the item's 4xx.
"""

# No `from __future__ import annotations` here: LitServe reads decode_request's annotation at runtime and hands it
# to FastAPI as the endpoint's parameter type, which must be the object, not a string.

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import litserve as ls
from fastapi import Depends, Request, Response

from classifier.service import Answer, Item
from peers import archive


@dataclass(frozen=True)
class Upload:
    """One request as the API server hands it to the inference worker (pickled: bytes and a string only)."""

    body: bytes
    seed: str | None


async def read_upload(request: Request) -> Upload:
    """The raw body and the X-Seed header: LitServe itself would parse the body as JSON or a form."""
    return Upload(await request.body(), request.headers.get(archive.SEED_HEADER))


class ClassifierAPI(ls.LitAPI):
    def __init__(self, mar: Path, workers: int, threads: int | None, max_batch_size: int, batch_timeout: float):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=archive.ROUTE)
        self.mar, self.workers, self.threads = mar, workers, threads

    def setup(self, device: str) -> None:
        # Runs in each inference worker process, so each loads its own copy with its share of the cores.
        self.served = archive.load(self.mar, self.workers, self.threads)
        # A batch's images decode in parallel, as in the TorchServe handler (Pillow releases the GIL).
        self.pool = ThreadPoolExecutor(self.served.threads, thread_name_prefix="preprocess")

    def decode_request(self, request: Annotated[Upload, Depends(read_upload)]) -> Upload:
        return request

    def batch(self, inputs: list[Upload]) -> list[Item]:
        return list(self.pool.map(self._prepare, inputs))

    def _prepare(self, upload: Upload) -> Item:
        return self.served.service.prepare(upload.body, upload.seed)

    def predict(self, x: list[Item] | Upload) -> list[Answer] | Answer:
        # Unbatched (max_batch_size 1), LitServe skips batch() and unbatch() and hands over one Upload.
        if isinstance(x, Upload):
            return self.served.service.answer([self._prepare(x)])[0]
        return self.served.service.answer(x)

    def unbatch(self, output: list[Answer]) -> list[Answer]:
        return output

    def encode_response(self, output: Answer) -> Response:
        return Response(output.json(), status_code=output.code, media_type="application/json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mar", type=Path, required=True, help="the archive our TorchServe serves (make archive)")
    parser.add_argument("--port", type=int, default=8020)
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes (docs/peers.md: 1 on 2 cores)")
    parser.add_argument("--threads", type=int, help="the backend's threads per worker (default: cores / workers)")
    parser.add_argument("--batch-size", type=int, help="max_batch_size (default: the archive's batchSize)")
    parser.add_argument("--batch-timeout", type=float, help="batch_timeout in seconds (default: the archive's maxBatchDelay)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    batch_size, timeout = archive.batching(args.mar, args.batch_size, args.batch_timeout)
    api = ClassifierAPI(args.mar, args.workers, args.threads, batch_size, timeout)
    # One API server process: it only parses requests; the cores are the inference workers'.
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers, timeout=60)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
