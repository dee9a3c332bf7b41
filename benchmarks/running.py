"""What the benchmark drivers share to put load on a server and say where it ran.

- :func:`run_locust` runs the load tests' own locustfile headless against a server (the client ``make loadtest``
  uses, so a benchmark measures answers the contract accepts) and :func:`parse_locust_stats` reads its CSV;
- :func:`process_cpu` splits the CPU a TorchServe spent between its Java frontend and its Python processes;
- :func:`machine` describes the machine, for every report's "Measured on" line.

The drivers import these from here and never from one another, so each driver can change on its own.
"""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

from serving.launcher import REPO

LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
# At the end of a level, requests in flight finish (and count) instead of being dropped: dropping them would
# hide exactly the slowest answers from p99. Users start no new request during this time.
STOP_TIMEOUT_S = 60


# ---------------------------------------------------------------- locust


def parse_locust_stats(path: Path) -> dict:
    """The ``Aggregated`` row of locust's ``*_stats.csv``: counts, throughput and latency percentiles in ms.

    ``rps`` is None when no request completed (locust writes 0 there, which is no measurement).
    """
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("Name") == "Aggregated"]
    if not rows:
        raise ValueError(f"{path} has no Aggregated row")
    row = rows[0]

    def number(key: str) -> float | None:
        value = row.get(key, "")
        return None if value in ("", "N/A") else float(value)

    requests = int(row["Request Count"])
    return {
        "requests": requests,
        "failures": int(row["Failure Count"]),
        "rps": number("Requests/s") if requests else None,
        "p50_ms": number("50%"),
        "p95_ms": number("95%"),
        "p99_ms": number("99%"),
        "avg_ms": number("Average Response Time"),
        "max_ms": number("Max Response Time"),
    }


def run_locust(
    host: str,
    users: int,
    seconds: float,
    image_dir: Path,
    model: str,
    response_format: str,
    csv_prefix: Path,
    extra: Sequence[str] = (),
) -> dict:
    """One headless locust run; returns the Aggregated row of its stats CSV. ``extra``: more locustfile options."""
    csv_prefix.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{max(1, round(seconds))}s",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--host",
        host,
        "--csv",
        str(csv_prefix),
        "--image-dir",
        str(image_dir),
        "--model-name",
        model,
        "--response-format",
        response_format,
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=seconds + STOP_TIMEOUT_S + 120)
    stats = Path(f"{csv_prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust wrote no {stats} (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = parse_locust_stats(stats)
    if result["failures"]:
        failures = Path(f"{csv_prefix}_failures.csv")
        print(f"  {result['failures']} failed requests; see {failures}", flush=True)
    return result


# ---------------------------------------------------------------- the server's processes


def process_cpu(procs: list, java: bool) -> float:
    """CPU seconds (user + system) of the frontend's JVM (java=True) or of everything else TorchServe started."""
    return sum(sum(p.cpu_times()[:2]) for p in procs if ("java" in p.name()) == java)


# ---------------------------------------------------------------- the machine


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": psutil.virtual_memory().total / 2**30,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }
