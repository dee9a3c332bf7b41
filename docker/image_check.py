#!/usr/bin/env python3
"""Build an image of the classifier with podman or docker, run it on loopback and check it (`make image-check`).

    python docker/image_check.py [--flavour cpu|gpu] [--engine podman|docker] [--keep]

Steps, each printed with its duration:
1. the engine: the one that answers (`docker info`, then `podman info`), said with the reason (ENGINE= / --engine to
   choose); neither answering is an error naming `make container-tools`. For podman it writes
   build/image-check/containers.conf (cgroupfs, file events, runc, nofile within the hard limit) and uses it;
2. the base image: used when present, else pulled, else a stand-in made from Debian bookworm packages with
   debootstrap (root) and imported under the base's name, labelled so the report says which one ran;
3. the torch requirements (build arg TORCH_REQUIREMENTS): the flavour's default, but for the cpu flavour, whose
   docker/torch-cpu.txt needs PyTorch's CPU wheel index, docker/torch-pypi.lock when that index does not answer;
4. the build, in the docker format (podman's OCI format drops the HEALTHCHECK), with the host's CA bundle
   bind-mounted for pip (PIP_CERT) when the engine is podman (a TLS-inspecting proxy needs it);
5. a container publishing 8080 and 7070 on 127.0.0.1 only (random ports: the machine is shared): /ping, readiness
   through the image's own HEALTHCHECK command (it must fail while the model loads when ping already answers), a
   `curl -T` prediction whose JSON keeps the response contract, every process uid 1000, then a stop under load:
   8 bounded clients (loadtests/stop_load.py: HTTP keep-alive, HTTP per request, gRPC) until each has been answered,
   then `stop -t 10`, which must take under 10 s, exit 0, and leave no accepted request reset or answered 5xx
   (the drain, serving/drain.py). For the gpu flavour on a host without a GPU it also finds the logged CPU fallback.

It ends with one Markdown table row for docs/containers.md and the image size. Exit status 0 only when every
check passed. The pure parts (engine choice, config text, Dockerfile reading, answer checks) are unit-tested
in tests/unit/test_image_check.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # make runs this file as a script: the load clients live in loadtests/
WORK = REPO / "build" / "image-check"
# The torch stage's requirements per flavour (the Dockerfile's TORCH_REQUIREMENTS defaults), and the fallback.
TORCH_REQUIREMENTS = {"cpu": "docker/torch-cpu.txt", "gpu": "docker/torch-pypi.lock"}
FALLBACK_TORCH_REQUIREMENTS = "docker/torch-pypi.lock"
CONTAINER_TOOLS = (
    "`make container-tools` (apt-get install podman buildah runc debootstrap netavark aardvark-dns "
    "containernetworking-plugins iptables uidmap curl catatonit)"
)
# What debootstrap adds to bookworm's minbase so that the stand-in offers what the real base offers to the
# Dockerfile: python 3.11 with venv for the slim image; nothing for the CUDA base, whose apt step installs Python.
STANDIN_PACKAGES = {"cpu": ["python3.11", "python3.11-venv", "python3-venv", "python-is-python3", "ca-certificates"], "gpu": []}
STANDIN_LABEL = "org.example.image-check.standin"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where the build sees the host's bundle: not over the image's own, which the ca-certificates package rewrites
# when an apt step installs it (its postinst fails on a bind-mounted file).
CA_IN_BUILD = Path("/run/host-ca-bundle.crt")
CONTAINER_UID = 1000
STOP_BOUND_S = 10.0
SAMPLE = REPO / "docs" / "sample.png"


# ---------------------------------------------------------------- pure parts (unit-tested)
def choose_engine(requested: str | None, answers: dict[str, str | None]) -> tuple[str, str]:
    """The engine to use and why: the requested one, else the first of docker and podman that answers.

    Args:
        requested: ENGINE / --engine, or None.
        answers: for "docker" and "podman", None when `<engine> info` succeeded, else why not ("not installed", or
            what it printed). A docker client on PATH with no daemon behind it does not answer.
    """
    if requested:
        if requested not in {"docker", "podman"}:
            raise ValueError(f"Invalid engine {requested!r}. Only docker and podman are supported.")
        return requested, "asked for"
    for engine in ("docker", "podman"):
        if answers.get(engine) is None:
            others = [f"{e}: {why}" for e, why in answers.items() if why is not None]
            return engine, f"`{engine} info` answered" + (f" ({'; '.join(others)})" if others else "")
    reasons = "; ".join(f"{e}: {why}" for e, why in answers.items())
    raise RuntimeError(f"no container engine answers ({reasons}). Install podman with {CONTAINER_TOOLS}")


def engine_answers(engine: str) -> str | None:
    """None when `<engine> info` succeeds, else why not, in a few words."""
    if not shutil.which(engine):
        return "not installed"
    try:
        out = subprocess.run([engine, "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`info` did not answer in 30 s"
    if out.returncode == 0:
        return None
    last = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or [f"exit {out.returncode}"]
    return f"`{engine} info` failed: {last[0][:160]}"


def containers_conf(hard_nofile: int, hard_nproc: int) -> str:
    """podman's containers.conf for a host without systemd.

    Rootful podman asks for nofile and nproc limits above what a container host may grant; runc then fails with
    'error setting rlimit type 7 (nofile) / 6 (nproc): operation not permitted'. nproc is also capped at 32768:
    conmon ran under that hard limit on the machine where this was measured, above the shell's.
    """
    nofile, nproc = min(hard_nofile, 1048576), min(hard_nproc, 32768)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        'runtime = "runc"\n'
    )


def base_image(dockerfile: str, flavour: str) -> str:
    """The FROM of stage `<flavour>-base`."""
    match = re.search(rf"^FROM\s+(\S+)\s+AS\s+{re.escape(flavour)}-base\s*$", dockerfile, flags=re.M | re.I)
    if not match:
        raise ValueError(f"the Dockerfile has no stage {flavour}-base")
    return match.group(1)


def qualified(image: str) -> str:
    """Docker Hub's full name, the one podman stores: python:3 -> docker.io/library/python:3."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def build_command(engine: str, flavour: str, tag: str, torch_requirements: str, ca_bundle: Path | None) -> list[str]:
    cmd = [
        engine,
        "build",
        "--build-arg",
        f"FLAVOUR={flavour}",
        "--build-arg",
        f"TORCH_REQUIREMENTS={torch_requirements}",
        "-t",
        tag,
    ]
    if engine == "podman":
        # --pull=never: the base is local by now (pulled or stand-in); --network host: the build's pip
        # reaches what the host reaches; docker format: OCI would drop the HEALTHCHECK.
        cmd += ["--pull=never", "--network", "host", "--format", "docker"]
        if ca_bundle:
            cmd += ["--volume", f"{ca_bundle}:{CA_IN_BUILD}:ro", "--build-arg", f"PIP_CERT={CA_IN_BUILD}"]
    return [*cmd, str(REPO)]


def index_url(requirements: str) -> str | None:
    """The `--index-url` a requirements file sets, if any."""
    match = re.search(r"^\s*(?:--index-url|-i)[=\s]+(\S+)", requirements, flags=re.M)
    return match.group(1) if match else None


def published_port(port_output: str) -> int:
    """The host port from `<engine> port NAME 8080` ("127.0.0.1:41234", one line per address)."""
    for line in port_output.splitlines():
        host, _, port = line.strip().rpartition(":")
        if host in {"127.0.0.1", "0.0.0.0"} and port.isdigit():
            return int(port)
    raise ValueError(f"no published loopback port in {port_output!r}")


def answer_problems(body: bytes) -> list[str]:
    """What is wrong with a prediction answer, by the response contract (empty when nothing)."""
    try:
        answer = json.loads(body)
    except ValueError as exc:
        return [f"not JSON ({exc}): {body[:200]!r}"]
    if not isinstance(answer, dict):
        return [f"not a JSON object: {body[:200]!r}"]
    problems = []
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != 2:
        problems.append(f"predictions is not a list of 2: {predictions!r}")
    else:
        for item in predictions:
            if not (isinstance(item, dict) and {"label", "index", "probability"} <= item.keys()):
                problems.append(f"prediction without label/index/probability: {item!r}")
            elif not 0.0 <= item["probability"] <= 1.0:
                problems.append(f"probability out of [0, 1]: {item!r}")
    embedding = answer.get("embedding")
    if not (isinstance(embedding, dict) and {"mean", "variance", "dim"} <= embedding.keys()):
        problems.append(f"embedding without mean/variance/dim: {embedding!r}")
    crop = answer.get("crop")
    if not (isinstance(crop, dict) and {"mode", "seed", "box"} <= crop.keys()):
        problems.append(f"crop without mode/seed/box: {crop!r}")
    model = answer.get("model")
    if not (isinstance(model, dict) and all(isinstance(model.get(key), str) and model[key] for key in ("name", "version"))):
        problems.append(f"model without name/version: {model!r}")
    return problems


def foreign_processes(processes: list[dict]) -> list[dict]:
    """Processes of the container that do not run as the image's user."""
    return [p for p in processes if p["uid"] != CONTAINER_UID]


def healthcheck_test(inspected: dict) -> list[str]:
    """The HEALTHCHECK's exec form from `image inspect` (docker: Config.Healthcheck; podman also top level)."""
    check = (inspected.get("Config") or {}).get("Healthcheck") or inspected.get("Healthcheck") or {}
    test = check.get("Test") or []
    if not test or test[0] != "CMD":
        raise ValueError(f"the image has no exec-form HEALTHCHECK (built in OCI format?): {check!r}")
    return test[1:]


def drain_summary(every: dict[str, int], after_stop: dict[str, int]) -> str:
    """One cell for the results: what the load's requests got, and how many were answered once the stop began."""
    lost = sum(n for kind, n in every.items() if kind not in {"answered", "refused"})
    return (
        f"{every.get('answered', 0)} answered ({after_stop.get('answered', 0)} after the stop began), "
        f"{every.get('refused', 0)} refused, {lost} lost"
    )


def human_size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


# A one-liner for `exec`: every process's uid and command line, read from /proc (the slim image has no ps).
PS = (
    "import json,os\n"
    "out=[]\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        uid=int(next(l for l in open(f'/proc/{pid}/status') if l.startswith('Uid:')).split()[1])\n"
    "        cmd=open(f'/proc/{pid}/cmdline','rb').read().replace(b'\\0',b' ').decode().strip()\n"
    "    except OSError:\n"
    "        continue\n"
    "    out.append({'pid':int(pid),'uid':uid,'cmd':cmd[:120]})\n"
    "print(json.dumps(out))\n"
)


# ---------------------------------------------------------------- the run
class Check:
    def __init__(self, engine: str, flavour: str, tag: str):
        self.engine, self.flavour, self.tag = engine, flavour, tag
        self.env = dict(os.environ)
        self.failures: list[str] = []
        self.facts: dict[str, str] = {}
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", flush=True)

    def run(self, *args: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        return out

    def expect(self, ok: bool, what: str) -> None:
        self.say(("ok   " if ok else "FAIL ") + what)
        if not ok:
            self.failures.append(what)

    def configure_engine(self) -> None:
        if self.engine != "podman":
            return
        WORK.mkdir(parents=True, exist_ok=True)
        conf = WORK / "containers.conf"
        hard = {name: resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))[1] for name in ("NOFILE", "NPROC")}
        conf.write_text(containers_conf(hard["NOFILE"], hard["NPROC"]))
        self.env["CONTAINERS_CONF"] = str(conf)
        self.say(f"podman with CONTAINERS_CONF={conf.relative_to(REPO)}")

    def image_exists(self, name: str) -> bool:
        return self.run(self.engine, "image", "inspect", name, check=False).returncode == 0

    def ensure_base(self) -> None:
        base = qualified(base_image((REPO / "Dockerfile").read_text(), self.flavour))
        if self.image_exists(base):
            labels = json.loads(self.run(self.engine, "image", "inspect", "--format", "{{json .Config.Labels}}", base).stdout)
            what = (labels or {}).get(STANDIN_LABEL)
            self.facts["base"] = "stand-in, found locally" if what else "real, found locally"
            self.say(f"base: {base} ({f'stand-in: {what}' if what else 'the real image'}, found locally)")
        elif self.run(self.engine, "pull", base, check=False, timeout=600).returncode == 0:
            self.facts["base"] = "real, pulled"
            self.say(f"base: {base} (the real image, pulled)")
        else:
            self.say(f"{base} cannot be pulled from here: building a stand-in from Debian bookworm packages")
            self.build_standin(base)

    def build_standin(self, base: str) -> None:
        if not shutil.which("debootstrap") or os.geteuid() != 0:
            raise RuntimeError(f"{base} is not pullable, and a stand-in needs root and debootstrap (apt-get install debootstrap)")
        rootfs = WORK / f"rootfs-{self.flavour}"
        shutil.rmtree(rootfs, ignore_errors=True)
        include = STANDIN_PACKAGES[self.flavour]
        debs = WORK / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        self.run(
            "debootstrap",
            "--variant=minbase",
            *([f"--include={','.join(include)}"] if include else []),
            f"--cache-dir={debs}",  # the .deb files stay for the next stand-in
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
            timeout=900,
        )
        what = f"debootstrap bookworm minbase + {' '.join(include) or 'nothing'}"
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [self.engine, "import", "--change", f'LABEL {STANDIN_LABEL}="{what}"', "-", base],
            stdin=tar.stdout,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        self.facts["base"] = "stand-in, built"
        self.say(f"base: {base} (stand-in: {what})")

    def torch_requirements(self, requested: str | None) -> str:
        chosen = requested or TORCH_REQUIREMENTS[self.flavour]
        index = index_url((REPO / chosen).read_text())
        if index and not requested:
            try:
                with urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=15) as resp:
                    reachable = resp.status == 200
            except OSError as exc:
                self.say(f"{index} ({chosen}) does not answer from here ({exc})")
                reachable = False
            if not reachable:
                self.say(
                    f"building with TORCH_REQUIREMENTS={FALLBACK_TORCH_REQUIREMENTS} instead"
                    " (PyPI's torch is the CUDA build: a larger image)"
                )
                chosen = FALLBACK_TORCH_REQUIREMENTS
        self.facts["torch"] = chosen
        return chosen

    def build(self, torch_requirements: str) -> None:
        archive = REPO / "model_store" / "classifier.mar"
        if not archive.exists():
            raise RuntimeError(f"{archive} is missing: run `make archive` first (make image-check does)")
        ca = CA_BUNDLE if self.engine == "podman" and CA_BUNDLE.exists() else None
        started = time.monotonic()
        cmd = build_command(self.engine, self.flavour, self.tag, torch_requirements, ca)
        self.say(" ".join(cmd))
        log = WORK / f"build-{self.flavour}.log"
        with log.open("w") as out:
            status = subprocess.run(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=1800).returncode
        if status != 0:
            raise RuntimeError(f"the build failed (exit {status}); its log: {log}\n" + log.read_text()[-3000:])
        self.facts["build"] = f"{time.monotonic() - started:.0f} s"
        size = int(self.run(self.engine, "image", "inspect", "--format", "{{.Size}}", self.tag).stdout.strip())
        self.facts["image size"] = human_size(size)
        self.say(f"built {self.tag} in {self.facts['build']}: {self.facts['image size']} ({size} bytes)")

    def exec(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(self.engine, "exec", name, *args, check=False, timeout=timeout)

    def serve_and_check(self) -> None:
        name = f"image-check-{self.flavour}-{os.getpid()}"
        inspected = json.loads(self.run(self.engine, "image", "inspect", self.tag).stdout)[0]
        health = healthcheck_test(inspected)
        self.say(f"HEALTHCHECK: {' '.join(health)}")
        self.run(self.engine, "run", "-d", "--name", name, "-p", "127.0.0.1::8080", "-p", "127.0.0.1::7070", self.tag)
        started = time.monotonic()
        try:
            port = published_port(self.run(self.engine, "port", name, "8080").stdout)
            grpc_port = published_port(self.run(self.engine, "port", name, "7070").stdout)
            url = f"http://127.0.0.1:{port}"
            self.wait_until_ready(name, url, health, started)
            self.predict(url)
            processes = json.loads(self.exec(name, "python", "-c", PS).stdout or "[]")
            foreign = foreign_processes(processes)
            self.expect(bool(processes) and not foreign, f"{len(processes)} processes, all uid {CONTAINER_UID}: {foreign or ''}")
            if self.flavour == "gpu":
                log = self.exec(name, "cat", "/home/model-server/logs/model_log.log").stdout
                reason = next((line for line in log.splitlines() if "running on the CPU" in line), "")
                self.expect(bool(reason), f"logged CPU fallback: {reason.split(' - ')[-1].strip()}")
            self.stop_under_load(name, port, grpc_port)
        finally:
            logs = self.run(self.engine, "logs", name, check=False).stdout
            (WORK / f"container-{self.flavour}.log").write_text(logs)
            self.run(self.engine, "rm", "-f", name, check=False)

    def stop_under_load(self, name: str, port: int, grpc_port: int) -> None:
        """`stop -t 10` while 8 clients load the container: the drain must answer every request it accepted."""
        from loadtests.stop_load import StopLoad

        with StopLoad(("127.0.0.1", port), ("127.0.0.1", grpc_port), SAMPLE.read_bytes(), seconds=120) as load:
            load.wait_answers(3)
            stop_started = time.monotonic()
            self.run(self.engine, "stop", "-t", str(int(STOP_BOUND_S)), name, timeout=60)
            took = time.monotonic() - stop_started
            load.stop(wait=15)
        status = self.run(self.engine, "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        self.facts["stop"] = f"{took:.1f} s, exit {status}"
        self.expect(took < STOP_BOUND_S and status == "0", f"stop in {took:.1f} s (< {STOP_BOUND_S:.0f}), exit status {status}")
        self.facts["stop under load"] = drain_summary(load.summary(), load.summary(since=stop_started))
        failures = load.failures()
        self.expect(not failures, f"stop under 8 clients: {self.facts['stop under load']} {[f.detail for f in failures[:3]]}")

    def wait_until_ready(self, name: str, url: str, health: list[str], started: float, timeout: float = 300) -> None:
        pinged = ready_at = None
        refused_after_ping = False
        while time.monotonic() - started < timeout:
            if pinged is None:
                try:
                    with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
                        if resp.status == 200:
                            pinged = time.monotonic() - started
                            self.say(f"/ping 200 after {pinged:.1f} s")
                except OSError:
                    pass
            if self.exec(name, *health, timeout=30).returncode == 0:
                ready_at = time.monotonic() - started
                break
            refused_after_ping |= pinged is not None
            time.sleep(0.5)
        self.expect(pinged is not None, "/ping answered 200")
        shown = f"{ready_at:.1f} s" if ready_at is not None else "never"
        self.expect(ready_at is not None, f"the HEALTHCHECK command passed ({shown})")
        self.facts["ping / ready"] = f"{pinged or float('nan'):.1f} s / {ready_at or float('nan'):.1f} s"
        # Not a failure when the model loaded within one poll of ping: record what was seen.
        self.facts["not ready while ping 200"] = "seen" if refused_after_ping else "not seen"
        self.say(f"readiness failed while ping already answered: {refused_after_ping}")

    def predict(self, url: str) -> None:
        curl = shutil.which("curl")
        if not curl:
            raise RuntimeError("curl is missing: make container-tools (or apt-get install curl)")
        started = time.monotonic()
        out = self.run(curl, "-sS", "-T", str(SAMPLE), "-w", "\n%{http_code}", f"{url}/predictions/classifier")
        body, _, code = out.stdout.rpartition("\n")
        problems = answer_problems(body.encode())
        self.expect(
            code == "200" and not problems,
            f"curl -T prediction: HTTP {code} in {time.monotonic() - started:.2f} s {problems or ''}",
        )

    def report_row(self) -> str:
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}"
        cells = [date, machine, self.engine, self.flavour, *(self.facts.get(k, "-") for k in COLUMNS)]
        cells.append("all passed" if not self.failures else "FAILED: " + "; ".join(self.failures))
        return "| " + " | ".join(cells) + " |"


COLUMNS = ("base", "torch", "build", "image size", "ping / ready", "not ready while ping 200", "stop", "stop under load")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, run and check the classifier's image on loopback.")
    parser.add_argument("--flavour", choices=["cpu", "gpu"], default="cpu", help="which image (default: cpu)")
    parser.add_argument(
        "--engine", default=os.environ.get("ENGINE") or None, help="docker or podman (default: ENGINE, else found)"
    )
    parser.add_argument("--tag", help="image tag (default: resnet-classifier:<flavour>)")
    parser.add_argument(
        "--torch-requirements", help="the torch stage's file (default: the flavour's, cpu falling back to PyPI's lock)"
    )
    parser.add_argument("--which-engine", action="store_true", help="print the engine that would be used, and exit")
    args = parser.parse_args(argv)
    try:
        engine, why = choose_engine(args.engine, {e: engine_answers(e) for e in ("docker", "podman")})
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.which_engine:
        print(engine)
        return 0
    check = Check(engine, args.flavour, args.tag or f"resnet-classifier:{args.flavour}")
    check.say(f"engine: {engine} ({why})")
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        check.configure_engine()
        check.ensure_base()
        check.build(check.torch_requirements(args.torch_requirements))
        check.serve_and_check()
    except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        check.failures.append(str(exc).splitlines()[0])
        print(f"error: {exc}", file=sys.stderr)
    check.say(f"total {time.monotonic() - check.started:.0f} s")
    print("\n| date | machine | engine | image | " + " | ".join(COLUMNS) + " | result |")
    print("|" + "---|" * (len(COLUMNS) + 5))
    print(check.report_row())
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
