"""Per-stage cost of preprocessing one request, full Pillow decode against region decode, and the server's body cost.

    python -m benchmarks.photo_stages build/loadtest_photos [--repeats 20]           # in-process stages
    python -m benchmarks.photo_stages build/loadtest_photos --server model_store/classifier.mar

In-process: every stage of ``preprocess_bytes`` timed on its own (median over ``--repeats`` random crops of every
image, one thread). With ``--server``: a private TorchServe on free loopback ports gets, one request at a time,
a body of the photos' size that is not an image (answered 400 right after the worker reads it: the cost of moving
the body through the Java frontend to the worker), the same with a 100-byte body, and the photos themselves over
HTTP and over gRPC (after 30 of each, so the frontend's JIT is warm).
Writes nothing; prints Markdown tables for docs/optimization.md (templates/photo_stages.md.j2 and
photo_server_costs.md.j2).
"""

from __future__ import annotations

import argparse
import http.client
import io
import random
import statistics
import time
import urllib.parse
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from benchmarks import reports
from classifier import jpeg_region
from classifier import preprocessing as pp


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median CPU ms of this thread per call: unlike wall time, it does not grow when other work shares the cores.
    Every stage here runs on the calling thread (Pillow's decoder and the ctypes call included)."""
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times) * 1e3


def stages(data: bytes, repeats: int, seed: int) -> dict[str, float]:
    """Median ms of each stage of the full path and of the region path for one image."""
    config = pp.PreprocessConfig()
    rng = random.Random(seed)
    out: dict[str, float] = {}
    out["open: header, EXIF, size check"] = median_ms(lambda: pp.open_image(data), repeats)

    def full_decode() -> Image.Image:
        img = pp.open_image(data)
        img.load()
        return img

    out["full: Pillow decode"] = median_ms(full_decode, max(3, repeats // 4))
    decoded = full_decode()
    out["full: EXIF transpose"] = median_ms(lambda: ImageOps.exif_transpose(decoded), max(3, repeats // 4))
    upright = pp.decode_image(data)
    zw, zh = pp.zoomed_size(upright.width, upright.height, config.zoom)
    boxes = [pp.choose_crop(zw, zh, config.crop_size, "random", rng) for _ in range(repeats)]
    it = iter(boxes * 2)
    out["full: zoom + crop"] = median_ms(lambda: pp.zoom_crop(upright, next(it), config.zoom), repeats)
    img = pp.open_image(data)
    method = pp.exif_transpose_method(img)
    windows = iter([pp.source_window(b, config.zoom, upright.width, upright.height) for b in boxes] * 2)
    out["region: decode window (+ transpose)"] = median_ms(
        lambda: pp.decode_upright_window(img, data, next(windows), method), repeats
    )
    stored = [pp.stored_window(pp.source_window(b, config.zoom, upright.width, upright.height), method, *img.size) for b in boxes]
    rows_to_bottom = iter([(0, 0, img.width, w[3]) for w in stored] * 2)  # what a top-down reader (pyvips) must decode
    out["sequential: full-width rows down to the window"] = median_ms(
        lambda: jpeg_region.decode_region(data, *next(rows_to_bottom)), max(3, repeats // 4)
    )
    crop = pp.zoom_crop(upright, boxes[0], config.zoom)
    out["both: normalise + pad"] = median_ms(
        lambda: pp.normalize_and_pad(crop, config.input_size, config.mean, config.std), repeats
    )
    seeds = iter(range(10**6))
    out["total, full decode"] = median_ms(
        lambda: pp.preprocess_bytes(data, config, "random", next(seeds), region_decode=False), max(3, repeats // 4)
    )
    out["total, region decode"] = median_ms(lambda: pp.preprocess_bytes(data, config, "random", next(seeds)), repeats)
    return out


def png_inflate_share(data: bytes) -> tuple[float, float]:
    """(ms for Pillow's full decode, ms to inflate half of the IDAT stream): what stopping at the crop would save on average."""
    full = median_ms(lambda: Image.open(io.BytesIO(data)).load(), 3)
    idat, pos = bytearray(), 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    img = Image.open(io.BytesIO(data))
    raw_size = (img.width * len(img.getbands()) + 1) * img.height
    half = median_ms(lambda: zlib.decompressobj().decompress(bytes(idat), raw_size // 2), 3)
    return full, half


def server_costs(
    mar: Path, photos: list[bytes], repeats: int, vmargs: str = "", warmup: int = 30
) -> list[tuple[str, float, float, float]]:
    """Per request kind: (name, wall p50 ms, Java frontend CPU ms, Python worker CPU ms), one request at a time."""
    import psutil

    from benchmarks.running import process_cpu
    from serving.launcher import REPO, TorchServeProcess, loopback_overrides

    overrides = {**loopback_overrides(mar.parent, f"classifier={mar.name}"), **({"vmargs": vmargs} if vmargs else {})}
    size = int(statistics.mean(len(p) for p in photos))
    garbage_big = bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8))
    garbage_small = b"not an image, " * 7
    with TorchServeProcess(REPO / "config.properties", REPO / "build" / "photo_stages", overrides, model="classifier") as ts:
        url = urllib.parse.urlparse(ts.inference_url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        server = psutil.Process(ts.proc.pid).children(recursive=True)

        def cpu(kind: str) -> float:
            return process_cpu(server, java=kind == "java")

        def post(body: bytes, expect: int) -> None:
            conn.request("POST", "/predictions/classifier", body=body, headers={"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != expect:
                raise RuntimeError(f"expected HTTP {expect}, got {resp.status}")

        from serving import grpc_client

        stub = grpc_client.inference_pb2_grpc.InferenceAPIsServiceStub(
            grpc_client.channel(url.hostname, int(ts.props["grpc_inference_port"]))
        )

        def grpc_predict(body: bytes) -> None:
            stub.Predictions(grpc_client.predictions_request(body), timeout=60)

        for body, code in ((garbage_small, 400), (garbage_big, 400), (photos[0], 200)):
            post(body, code)  # warm the connection and the worker
        for i in range(warmup):  # and the frontend's JIT, on both paths: the first requests cost it several times more
            post(photos[i % len(photos)], 200)
            grpc_predict(photos[i % len(photos)])
        rows = []
        kinds = [
            ("100 B non-image body (400)", lambda: post(garbage_small, 400)),
            (f"{size / 1e6:.1f} MB non-image body (400)", lambda: post(garbage_big, 400)),
            ("photo (200)", lambda: post(photos[next(cycle) % len(photos)], 200)),
            ("photo over gRPC (200)", lambda: grpc_predict(photos[next(cycle) % len(photos)])),
        ]
        cycle = iter(range(10**6))
        for name, send in kinds:
            java, worker, walls = cpu("java"), cpu("python"), []
            for _ in range(repeats):
                start = time.perf_counter()
                send()
                walls.append(time.perf_counter() - start)
            java, worker = (cpu("java") - java) / repeats * 1e3, (cpu("python") - worker) / repeats * 1e3
            rows.append((name, statistics.median(walls) * 1e3, java, worker))
        return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image_dir", type=Path, help="JPEG photos (e.g. build/loadtest_photos)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per stage and image (default: 20)")
    parser.add_argument("--server", type=Path, default=None, help="an archive: also measure the body cost on a server")
    parser.add_argument("--vmargs", default="", help="JVM options for the --server frontend (default: TorchServe's)")
    parser.add_argument("--server-only", action="store_true", help="skip the in-process stages")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core, as the other per-image tables in docs/optimization.md
    files = sorted(args.image_dir.glob("*.jpg"))
    photos = [f.read_bytes() for f in files]
    if args.server_only:
        print(server_table(server_costs(args.server, photos, args.repeats, args.vmargs)), end="")
        return
    rows = [stages(data, args.repeats, seed) for seed, data in enumerate(photos)]
    sample = Image.open(files[0])
    png = io.BytesIO()
    ImageOps.exif_transpose(sample).save(png, "PNG")
    full, half = png_inflate_share(png.getvalue())
    table = reports.render(
        "photo_stages.md.j2",
        images=len(files),
        stages={key: statistics.median(r[key] for r in rows) for key in rows[0]},
        png_mb=len(png.getvalue()) / 1e6,
        png_full_ms=full,
        png_half_ms=half,
    )
    print(table, end="")
    if args.server:
        print(server_table(server_costs(args.server, photos, args.repeats, args.vmargs)), end="")


def server_table(rows: list[tuple[str, float, float, float]]) -> str:
    """The rows of :func:`server_costs` as the Markdown table docs/optimization.md shows."""
    return reports.render("photo_server_costs.md.j2", rows=rows)


if __name__ == "__main__":
    main()
