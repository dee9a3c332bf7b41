"""Our TorchServe against the peer servers (issue 28): same archive, same images, same client, one run.

    make bench-peers                                                     # python -m benchmarks.peers
    python -m benchmarks.peers --duration 5 --warmup 1 --out-dir build/peers-short   # a quick check

Each server serves model_store/classifier.mar (a peer unpacks it as peers/triton.py does, so model, model-config and
version are the archive's) and gets the same levels from the load tests' own locustfile (``run_locust``): 1 and 16
clients on one web-sized JPEG (640x427, ``loadtests.images.write_sample``), 16 on the mixed images
(``write_images``) and 16 on one 12 MP photo (``write_photos``). Between a level's start and end the driver reads the
CPU time of every process of the server's tree and, at the end, their resident memory, grouped by process name
(TorchServe: java, python; Triton: tritonserver, its python stub, our python).

A peer is a :class:`Peer` in :data:`PEERS`: how to start it from its venv, the URL that says it is ready, and the
locustfile options that make the one client speak its protocol. A peer whose venv is missing is skipped, with a
line saying so in the report. Writes the measured section of ``docs/peers.md`` (between the two BENCH markers; the
rest of the file is prose kept by hand), ``peers.json`` and ``peers.png`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.reports import measured
from benchmarks.running import machine, run_locust
from serving.launcher import REPO, TorchServeProcess, free_port, loopback_overrides

OURS = "torchserve"
BEGIN, END = "<!-- BENCH:BEGIN (benchmarks/peers.py writes this section) -->", "<!-- BENCH:END -->"
# (workload, users): the levels issue 28 asks for, in the order they run.
LEVELS = (("sample", 1), ("sample", 16), ("mixed", 16), ("photo", 16))
WORKLOADS = {
    "sample": "one 640x427 JPEG (quality 90)",
    "mixed": "the mixed load-test images (64-1600 px PNG and JPEG)",
    "photo": "one 12 MP JPEG (4000x3000, quality 90)",
}


# ---------------------------------------------------------------- the servers


@dataclass(frozen=True)
class Peer:
    """How to run one peer server and how the shared client talks to it.

    ``argv(mar, port)`` is the command that serves ``mar`` on HTTP ``port`` (it may take more free ports itself);
    ``ready`` is the route that answers 200 once the model is loaded; ``locust`` the locustfile options for its
    protocol (``--protocol v2``, ``--path /predict``, ...).
    """

    name: str
    python: Path
    argv: Callable[[Path, int], list[str]]
    ready: str
    locust: tuple[str, ...] = ()
    # Text the ready route's body must hold: Ray's proxy answers /-/routes before the app's replicas are up.
    ready_text: str | None = None

    def missing(self) -> str | None:
        return None if self.python.exists() else f"{self.python} is missing (`make peers` builds it)"


def triton_argv(mar: Path, port: int) -> list[str]:
    ports = ["--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    return [str(REPO / ".venv-triton" / "bin" / "python"), "-m", "peers.triton", "--mar", str(mar), *ports]


def plain_argv(venv: str, module: str) -> Callable[[Path, int], list[str]]:
    """A peer that takes ``--mar`` and ``--port`` and answers our route (peers/litserve_app.py, peers/ray_app.py)."""

    def argv(mar: Path, port: int) -> list[str]:
        return [str(REPO / venv / "bin" / "python"), "-m", module, "--mar", str(mar), "--port", str(port)]

    return argv


# Each peer: its venv's python, its command, its ready route and the client options. LitServe and Ray answer our
# JSON on our route (/predictions/classifier), so the client needs no option for them. BentoML has no entry: it does
# not resolve with requirements.lock (docs/peers.md).
PEERS: dict[str, Peer] = {
    "triton": Peer(
        "triton", REPO / ".venv-triton" / "bin" / "python", triton_argv, "/v2/models/classifier/ready", ("--protocol", "v2")
    ),
    "litserve": Peer(
        "litserve", REPO / ".venv-litserve" / "bin" / "python", plain_argv(".venv-litserve", "peers.litserve_app"), "/health"
    ),
    "ray": Peer(
        "ray",
        REPO / ".venv-ray" / "bin" / "python",
        plain_argv(".venv-ray", "peers.ray_app"),
        "/-/routes",
        ready_text="/predictions/classifier",
    ),
}


@dataclass
class Server:
    """A started server: where the client sends to, the process tree to measure, and its client options."""

    name: str
    url: str
    root_pid: int
    locust: tuple[str, ...] = ()
    log: Path | None = None
    notes: list[str] = field(default_factory=list)


@contextmanager
def start_ours(mar: Path, work: Path) -> Iterator[Server]:
    overrides = loopback_overrides(mar.parent.resolve(), f"classifier={mar.name}")
    with TorchServeProcess(REPO / "config.properties", work, overrides, model="classifier") as ts:
        assert ts.proc is not None
        yield Server(OURS, ts.inference_url, ts.proc.pid)


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 300, text: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200 and (text is None or text in resp.read().decode(errors="replace")):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def start_peer(peer: Peer, mar: Path, work: Path) -> Iterator[Server]:
    work.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), work / f"{peer.name}.log"
    with log.open("wb") as out:
        # Its own session, so that stopping it reaches every process it started (Triton's server and stubs).
        process = subprocess.Popen(
            peer.argv(mar.resolve(), port), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + peer.ready, process, log, text=peer.ready_text)
        yield Server(peer.name, url, process.pid, peer.locust, log)
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    import os

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ---------------------------------------------------------------- measuring (pure helpers unit-tested)


def tree(root_pid: int) -> list:
    import psutil

    root = psutil.Process(root_pid)
    return [root, *root.children(recursive=True)]


def by_name(samples: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Sum ``(process name, value)`` samples per name: the JVM, the Python workers, Triton's stub, ..."""
    totals: dict[str, float] = {}
    for name, value in samples:
        totals[name] = totals.get(name, 0.0) + value
    return totals


def cpu_per_request(before: dict[str, float], after: dict[str, float], answered: int) -> dict[str, float]:
    """CPU ms per answered request, per process name: what ``after - before`` CPU seconds cost each answer."""
    if answered <= 0:
        return {}
    return {name: 1e3 * (after[name] - before.get(name, 0.0)) / answered for name in sorted(after)}


def cpu_seconds(procs: list) -> dict[str, float]:
    import psutil

    samples = []
    for p in procs:
        # A helper that ended during the level is left out: its CPU is lost to both samples alike.
        with suppress(psutil.NoSuchProcess):
            samples.append((p.name(), sum(p.cpu_times()[:2])))
    return by_name(samples)


def rss_mib(procs: list) -> dict[str, float]:
    import psutil

    samples = []
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            samples.append((p.name(), p.memory_info().rss / 2**20))
    return by_name(samples)


def measure(server: Server, levels: Sequence[tuple[str, Path, int]], args, work: Path) -> list[dict]:
    rows = []
    for workload, image_dir, users in levels:
        tag = f"{workload}-c{users}"
        if args.warmup > 0:
            run_locust(server.url, users, args.warmup, image_dir, "classifier", "ours", work / "warmup" / tag, server.locust)
        procs = tree(server.root_pid)  # after the warm-up: every worker and stub has started
        before = cpu_seconds(procs)
        result = run_locust(server.url, users, args.duration, image_dir, "classifier", "ours", work / tag, server.locust)
        after, rss = cpu_seconds(procs), rss_mib(procs)
        answered = result["requests"] - result["failures"]
        row = {"server": server.name, "workload": workload, "users": users, **result}
        row.update(cpu_ms=cpu_per_request(before, after, answered), rss_mib=rss)
        rows.append(row)
        print(
            f"{server.name} {tag}: {measured(result['rps'])} req/s, p50 {measured(result['p50_ms'], '.0f')} ms, "
            f"p99 {measured(result['p99_ms'], '.0f')} ms, {result['failures']} failed of {result['requests']}",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------- the report (pure, unit-tested)


def ratios(rows: list[dict]) -> list[dict]:
    """Per peer and level: its throughput over ours and its p99 over ours, from the same run."""
    ours = {(r["workload"], r["users"]): r for r in rows if r["server"] == OURS}
    out = []
    for r in rows:
        base = ours.get((r["workload"], r["users"]))
        if r["server"] == OURS or base is None:
            continue
        rps = r["rps"] / base["rps"] if r["rps"] and base["rps"] else None
        p99 = r["p99_ms"] / base["p99_ms"] if r["p99_ms"] and base["p99_ms"] else None
        out.append({"server": r["server"], "workload": r["workload"], "users": r["users"], "rps": rps, "p99": p99})
    return out


def processes(values: dict[str, float], spec: str) -> str:
    return ", ".join(f"{name} {value:{spec}}" for name, value in sorted(values.items())) or "n/a"


def render_section(report: dict) -> str:
    m = report["machine"]
    lines = [
        BEGIN,
        "",
        f"Measured {report['date']} on {m['cpu']} ({m['cores']} logical cores, {m['ram_gib']:.0f} GiB), {m['os']}, "
        f"with `{report['command']}`: {report['settings']['duration_s']:g} s per level after a "
        f"{report['settings']['warmup_s']:g} s warm-up, every server in turn on the same archive "
        f"({report['settings']['mar']}) and the same locust client (loadtests/locustfile.py).",
        "",
    ]
    for name, reason in report["skipped"].items():
        lines += [f"- {name}: not measured, {reason}", ""]
    lines += ["| server | workload | clients | req/s | p50 ms | p99 ms | failed | CPU ms / request | RSS MiB |"]
    lines += ["|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in report["rows"]:
        lines.append(
            f"| {r['server']} | {r['workload']} | {r['users']} | {measured(r['rps'])} | {measured(r['p50_ms'], '.0f')} "
            f"| {measured(r['p99_ms'], '.0f')} | {r['failures']} of {r['requests']} | {processes(r['cpu_ms'], '.1f')} "
            f"| {processes(r['rss_mib'], '.0f')} |"
        )
    if report["ratios"]:
        lines += ["", f"Against {OURS}, same run:", "", "| server | workload | clients | req/s ratio | p99 ratio |"]
        lines += ["|---|---|---:|---:|---:|"]
        for r in report["ratios"]:
            lines.append(
                f"| {r['server']} | {r['workload']} | {r['users']} | {measured(r['rps'], '.2f')} | {measured(r['p99'], '.2f')} |"
            )
    lines += ["", "Workloads: " + "; ".join(f"{k}: {v}" for k, v in WORKLOADS.items()) + ".", "", "![peers](peers.png)", "", END]
    return "\n".join(lines) + "\n"


def splice(document: str, section: str) -> str:
    """``document`` with its BENCH section replaced by ``section`` (appended when it has none)."""
    start, end = document.find(BEGIN), document.find(END)
    if start == -1 or end == -1 or end < start:
        return document.rstrip("\n") + "\n\n" + section
    return document[:start] + section.rstrip("\n") + document[end + len(END) :]  # the text around it as it was


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [f"{w}\nc={u}" for w, u in LEVELS if any(r["workload"] == w and r["users"] == u for r in report["rows"])]
    servers = list(dict.fromkeys(r["server"] for r in report["rows"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(servers))
    for i, server in enumerate(servers):
        rows = {f"{r['workload']}\nc={r['users']}": r for r in report["rows"] if r["server"] == server}
        xs = [x + i * width for x in range(len(levels))]
        for ax, key in zip(axes, ("rps", "p99_ms"), strict=True):
            ax.bar(xs, [rows.get(level, {}).get(key) or 0 for level in levels], width, label=server)
    for ax, title in zip(axes, ("throughput (req/s)", "p99 latency (ms)"), strict=True):
        ax.set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(levels))], levels)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.suptitle(f"classifier.mar on {report['machine']['cpu']} ({report['machine']['cores']} cores), {report['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- the run


def peer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    return names


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=30, help="measured seconds per level (default: 30)")
    p.add_argument("--warmup", type=float, default=5, help="discarded warm-up seconds before each level (default: 5)")
    p.add_argument("--peers", type=peer_list, default=list(PEERS), help=f"comma-separated (default: {','.join(PEERS)})")
    p.add_argument("--mar", type=Path, default=REPO / "model_store" / "classifier.mar", help="the archive every server serves")
    p.add_argument("--images", type=Path, default=REPO / "build" / "peers" / "images", help="the image sets (made when missing)")
    p.add_argument("--work-dir", type=Path, default=REPO / "build" / "peers" / "work", help="servers' and locust's files")
    p.add_argument("--out-dir", type=Path, default=REPO / "docs", help="where peers.md/.json/.png go (default: docs)")
    return p


def image_sets(root: Path) -> dict[str, Path]:
    from loadtests.images import write_images, write_photos, write_sample

    made = {"sample": root / "sample", "mixed": root / "mixed", "photo": root / "photo"}
    writers = {"sample": write_sample, "mixed": write_images, "photo": lambda d: write_photos(d, count=1)}
    for name, folder in made.items():
        if not any(folder.rglob("*.*")):
            print(f"writing the {name} images to {folder}", flush=True)
            writers[name](folder)
    return made


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds the `with` blocks, which stop the servers


def main(args: argparse.Namespace) -> dict:
    signal.signal(signal.SIGTERM, _terminate)
    if not args.mar.is_file():
        raise SystemExit(f"error: {args.mar} does not exist; run `make archive` first")
    sets = image_sets(args.images)
    levels = [(workload, sets[workload], users) for workload, users in LEVELS]
    started = dt.datetime.now().astimezone()
    rows: list[dict] = []
    with start_ours(args.mar, args.work_dir / OURS) as server:
        rows += measure(server, levels, args, args.work_dir / OURS / "locust")
    skipped = {}
    for name in args.peers:
        peer = PEERS[name]
        reason = peer.missing()
        if reason:
            print(f"skipping {name}: {reason}", flush=True)
            skipped[name] = reason
            continue
        with start_peer(peer, args.mar, args.work_dir / name) as server:
            rows += measure(server, levels, args, args.work_dir / name / "locust")
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "command": shlex.join(["python", "-m", "benchmarks.peers", *sys.argv[1:]]),
        "machine": machine(),
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "mar": str(args.mar.name), "levels": LEVELS},
        "skipped": skipped,
        "rows": rows,
        "ratios": ratios(rows),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "peers.json").write_text(json.dumps(report, indent=2) + "\n")
    doc = args.out_dir / "peers.md"
    doc.write_text(splice(doc.read_text() if doc.exists() else "# Peer servers\n", render_section(report)))
    plot(report, args.out_dir / "peers.png")
    print(f"wrote {doc}, peers.json, peers.png")
    return report


if __name__ == "__main__":
    done = main(get_args_parser().parse_args())
    broken = [f"{r['server']} {r['workload']} c={r['users']}" for r in done["rows"] if r["failures"] or not r["requests"]]
    if broken:
        raise SystemExit("error: the report is written, but these levels failed requests: " + "; ".join(broken))
