"""Throughput through the draining proxy against TorchServe's own port, interleaved on one server.

    python -m benchmarks.proxy_cost model_store/classifier.mar build/loadtest_images [--clients 16 --seconds 10 --rounds 3]

A private TorchServe behind the proxy (serving/drain.py) on free loopback ports; ``--clients`` closed-loop clients,
each on one kept-alive HTTP connection, post the images in turn for ``--seconds`` to the proxy's port, then to
TorchServe's private port behind it, alternating which goes first in each round. The same server, the same warm
worker and short alternating windows: drift on a shared machine (and between two servers' start-ups, which
`benchmarks.cpu_split --proxy` compares) does not favour either path. Printed: answered req/s of every window and
the mean per path. CPU per request, the proxy's included: ``python -m benchmarks.cpu_split ... --proxy``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import threading
import time
from pathlib import Path
from statistics import mean

from serving.launcher import REPO, TorchServeProcess, loopback_overrides, read_properties


def window(port: int, bodies: list[bytes], clients: int, seconds: float) -> float:
    """Answered requests per second over ``seconds`` of ``clients`` closed-loop keep-alive clients."""
    answered, lock, stop = [0], threading.Lock(), time.monotonic() + seconds

    def client(first: int) -> None:
        conn, k = http.client.HTTPConnection("127.0.0.1", port, timeout=60), first
        while time.monotonic() < stop:
            conn.request("POST", "/predictions/classifier", body=bodies[k % len(bodies)])
            resp = conn.getresponse()
            resp.read()
            k += 1
            if resp.status == 200:
                with lock:
                    answered[0] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answered[0] / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mar", type=Path, help="the archive to serve")
    parser.add_argument("image_dir", type=Path, help="the images to post (e.g. build/loadtest_images)")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients (default: 16)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each window (default: 10)")
    parser.add_argument("--rounds", type=int, default=3, help="windows per path (default: 3)")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "proxy_cost", help="the server's folder")
    args = parser.parse_args(argv)

    bodies = [p.read_bytes() for p in sorted(args.image_dir.rglob("*")) if p.is_file()]
    if not bodies:
        raise SystemExit(f"error: no images under {args.image_dir}; write some with python -m loadtests.images {args.image_dir}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    overrides = loopback_overrides(args.mar.parent, f"classifier={args.mar.name}")
    with TorchServeProcess(REPO / "config.properties", args.work, overrides, proxy=True) as ts:
        paths = {
            "proxy": int(ts.props["inference_address"].rsplit(":", 1)[1]),
            "direct": int(read_properties(ts.config_path)["inference_address"].rsplit(":", 1)[1]),
        }
        window(paths["proxy"], bodies, args.clients, 5)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.rounds):
            for name in list(paths) if r % 2 == 0 else list(paths)[::-1]:
                rates[name].append(window(paths[name], bodies, args.clients, args.seconds))
                print(f"round {r + 1}, {name}: {rates[name][-1]:.1f} req/s", flush=True)
    for name, values in rates.items():
        print(f"{name}: mean {mean(values):.1f} req/s ({', '.join(f'{v:.1f}' for v in values)})")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
