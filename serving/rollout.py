"""Roll a new model version out on a running TorchServe, and back, through its management API on loopback.

    python -m serving.rollout rollout MAR [--config config.properties]     # make rollout MAR=...
    python -m serving.rollout rollback [--config config.properties]        # make rollback
    python -m serving.rollout status [--config config.properties]

A rollout, with clients being served throughout:

1. copies MAR into the model store as ``classifier-<version>.mar`` and keeps the running version's archive there under
   its own versioned name, so that a later ``make archive`` (which rewrites classifier.mar) cannot take away what a
   rollback needs; an archive is never overwritten: a different file under a version's name is an error;
2. registers the new version beside the running one (``POST /models?url=classifier-<v>.mar``) and waits until its
   workers are READY;
3. asks the new version for one answer by its own URL (``/predictions/classifier/<v>``), which no client uses:
   a version that loads but does not answer is unregistered again, and the old one goes on serving;
4. makes it the default (``PUT /models/classifier/<v>/set-default``): from then on every request that names no version
   is queued for it;
5. drains the old version: waits until its queue is empty, then ``--drain-seconds`` more for the batch its worker may
   still be running (TorchServe reports queued requests, not the one in flight, and unregistering kills the worker,
   failing its batch with a 500), then unregisters it;
6. records both versions in the model store's ``rollout.json``.

``rollback`` rolls the recorded previous version out the same way, so it is as safe under load, and a second rollback
goes forward again. It refuses when the server no longer runs what the record says (restarted since, or changed by
hand). The archives are registered by file name: TorchServe then loads them from the model store only, and leaves the
file in place when it unregisters the version (it deletes only archives it downloaded itself).

Loopback only: the management API can load code, so this refuses a management address that is not 127.0.0.1, and the
server's configs keep it there (docs/serving.md, "Security stance"). Standard library only, like serving.launcher.
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from classifier.versions import MODEL_NAME, ModelIdentity, archive_identity, check_version
from serving.launcher import REPO, management_url, read_properties, wait_ready

STATE_FILE = "rollout.json"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PROBE_IMAGE = REPO / "docs" / "sample.png"
# An in-flight batch of the old version takes the model's batch latency (well under a second here, docs/scaling.md);
# the default waits an order of magnitude longer.
DRAIN_SECONDS = 5.0


class RolloutError(Exception):
    """What stopped a rollout or rollback, in words for the user; the server is left serving a whole version."""


# ---------------------------------------------------------------- the management API
@dataclass(frozen=True)
class Server:
    """A running TorchServe as this tool reaches it: its management and inference URLs and its model store."""

    management: str
    inference: str
    store: Path
    model: str = MODEL_NAME

    @classmethod
    def from_config(cls, config: Path, model: str = MODEL_NAME) -> Server:
        props = read_properties(config)
        # The address the server binds, not the one we would call it at (management_url maps 0.0.0.0 to loopback).
        bound = props.get("management_address", "http://127.0.0.1:8081")
        if urllib.parse.urlparse(bound).hostname not in LOOPBACK:
            raise RolloutError(
                f"{config}: management_address {bound} is not on loopback; a rollout only uses a management API that "
                "listens on 127.0.0.1 alone, because whoever reaches it can load code (docs/serving.md, Security stance)"
            )
        mgmt = management_url(props)
        inference = props.get("inference_address", "http://127.0.0.1:8080").replace("0.0.0.0", "127.0.0.1")
        # Relative to the config's folder, as `make serve` starts TorchServe in the repository beside config.properties.
        store = Path(config).resolve().parent / props.get("model_store", "model_store")
        return cls(mgmt, inference, store, model)

    def call(self, method: str, path: str, timeout: float = 30, base: str | None = None, body: bytes | None = None):
        """(status, parsed JSON or text) of one request; TorchServe's error bodies are JSON with a ``message``."""
        # urllib labels a body as a form, which TorchServe's frontend would parse as one (a 500; README, curl).
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        request = urllib.request.Request(f"{base or self.management}{path}", data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise RolloutError(f"no answer from {base or self.management}{path}: {exc}") from None
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def versions(self) -> dict[str, dict]:
        """Every registered version's description (``GET /models/<model>/all``); {} when the model is not registered."""
        status, described = self.call("GET", f"/models/{self.model}/all")
        if status == 404:
            return {}
        if status != 200:
            raise RolloutError(f"describing {self.model} failed: HTTP {status} {message(described)}")
        return {d["modelVersion"]: d for d in described}

    def default_version(self) -> str:
        status, described = self.call("GET", f"/models/{self.model}")
        if status != 200:
            raise RolloutError(
                f"no server serves {self.model} at {self.management} (HTTP {status} {message(described)}); "
                "start it first (make serve)"
            )
        return described[0]["modelVersion"]

    def pending(self, version: str) -> int:
        """Requests queued for ``version`` and not yet taken by a worker."""
        status, described = self.call("GET", f"/models/{self.model}/{version}")
        if status != 200:
            raise RolloutError(f"describing {self.model} {version} failed: HTTP {status} {message(described)}")
        return int(described[0].get("jobQueueStatus", {}).get("pendingRequests", 0))


def message(body) -> str:
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:300]


# ---------------------------------------------------------------- the model store
def versioned_name(identity: ModelIdentity) -> str:
    return f"{identity.name}-{identity.version}.mar"


def copy_into(store: Path, source: Path, name: str) -> Path:
    """``source`` as ``store/name``: written beside it and renamed, so the name never holds half a file."""
    target = store / name
    if target.exists():
        if not filecmp.cmp(source, target, shallow=False):
            raise RolloutError(
                f"{target} already holds a different archive of the same version; archives are never overwritten: "
                f"give {source} another version (make archive VERSION=...)"
            )
        return target
    handle, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=store)
    os.close(handle)
    try:
        shutil.copyfile(source, tmp)
        shutil.copymode(source, tmp)  # mkstemp made it private to us
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def keep_running_archive(server: Server, running: dict) -> str:
    """The store's file name of the running version's archive, copied under its versioned name if it is not already.

    The running version was registered from ``modelUrl`` (``classifier.mar`` after ``make serve``), which
    ``make archive`` rewrites: after that the running version's archive is gone, and so is the way back to it.
    """
    identity = ModelIdentity(server.model, running["modelVersion"])
    kept = server.store / versioned_name(identity)
    if kept.is_file() and archive_identity(kept) == identity:
        return kept.name
    source = server.store / Path(urllib.parse.urlparse(running["modelUrl"]).path).name
    if not source.is_file() or archive_identity(source) != identity:
        found = archive_identity(source).version if source.is_file() else "missing"
        raise RolloutError(
            f"the running version {identity.version} was loaded from {source}, which is now version {found}: "
            f"its archive is gone, so there would be no way back to it. Archive the new model elsewhere "
            f"(make archive MODEL_STORE=build/next), or rebuild {identity.version} "
            f"(make archive VERSION={identity.version}) and roll out from there"
        )
    return copy_into(server.store, source, kept.name).name


def read_state(store: Path) -> dict:
    path = store / STATE_FILE
    if not path.is_file():
        raise RolloutError(f"no rollout is recorded in {path}: there is nothing to roll back")
    return json.loads(path.read_text())


def write_state(store: Path, model: str, current: tuple[str, str], previous: tuple[str, str]) -> None:
    state = {
        "model": model,
        "current": {"version": current[0], "archive": current[1]},
        "previous": {"version": previous[0], "archive": previous[1]},
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    tmp = store / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, store / STATE_FILE)


# ---------------------------------------------------------------- rollout
def probe(server: Server, version: str, image: Path, timeout: float) -> None:
    """One answer from ``version`` by its own URL, naming that version; else unregister it and fail."""
    status, body = server.call(
        "POST", f"/predictions/{server.model}/{version}", timeout, base=server.inference, body=image.read_bytes()
    )
    answered = isinstance(body, dict) and body.get("model", {}).get("version")
    if status == 200 and answered == version:
        return
    server.call("DELETE", f"/models/{server.model}/{version}", timeout)
    raise RolloutError(f"version {version} loaded but answered HTTP {status} {message(body)}; it was unregistered again")


def drain(server: Server, version: str, seconds: float, timeout: float, say) -> None:
    """Wait until nothing is queued for ``version``, then ``seconds`` for the batch in flight, then until empty again."""
    deadline = time.monotonic() + timeout
    while True:
        while server.pending(version) > 0:
            if time.monotonic() > deadline:
                raise RolloutError(f"version {version} still has queued requests after {timeout:.0f} s; it stays registered")
            time.sleep(0.05)
        time.sleep(seconds)
        if server.pending(version) == 0:  # nothing was queued for it by its own URL meanwhile
            say(f"drained version {version} (queue empty, then {seconds:g} s for the batch in flight)")
            return


def rollout(
    server: Server,
    mar: Path,
    *,
    drain_seconds: float = DRAIN_SECONDS,
    timeout: float = 300,
    probe_image: Path = PROBE_IMAGE,
    say=print,
) -> tuple[str, str]:
    """Serve ``mar``'s version in place of the running one, without a failed request; (old, new) versions."""
    if not mar.is_file():
        raise RolloutError(f"no such archive: {mar} (make archive writes model_store/classifier.mar)")
    try:
        new = archive_identity(mar)
        check_version(new.version, f"{mar}'s version")
    except ValueError as exc:
        raise RolloutError(str(exc)) from None
    if new.name != server.model:
        raise RolloutError(f"{mar} registers as model {new.name!r}, not {server.model!r}")
    old_version = server.default_version()
    registered = server.versions()
    if new.version == old_version:
        raise RolloutError(f"version {new.version} is already the one served; give the new archive another version")
    strays = set(registered) - {old_version, new.version}
    if strays:
        raise RolloutError(
            f"{server.model} has other versions registered ({', '.join(sorted(strays))}), an earlier rollout left "
            f"unfinished: unregister them first (curl -X DELETE {server.management}/models/{server.model}/<version>)"
        )
    old_archive = keep_running_archive(server, registered[old_version])
    new_archive = copy_into(server.store, mar, versioned_name(new)).name

    if new.version not in registered:
        say(f"registering {server.model} {new.version} from {server.store / new_archive}")
        query = urllib.parse.urlencode({"url": new_archive, "synchronous": "true"})
        status, body = server.call("POST", f"/models?{query}", timeout)
        if status != 200:
            raise RolloutError(f"registering {new_archive} failed: HTTP {status} {message(body)}")
    try:
        wait_ready(server.management, f"{server.model}/{new.version}", timeout)
    except RuntimeError as exc:
        server.call("DELETE", f"/models/{server.model}/{new.version}", timeout)
        raise RolloutError(f"version {new.version} did not become READY ({exc}); it was unregistered again") from None
    probe(server, new.version, probe_image, timeout)

    status, body = server.call("PUT", f"/models/{server.model}/{new.version}/set-default", timeout)
    if status != 200:
        raise RolloutError(f"making {new.version} the default failed: HTTP {status} {message(body)}")
    say(f"{server.model} {new.version} is the default; draining {old_version}")
    drain(server, old_version, drain_seconds, timeout, say)
    status, body = server.call("DELETE", f"/models/{server.model}/{old_version}", timeout)
    if status != 200:
        raise RolloutError(f"unregistering {old_version} failed: HTTP {status} {message(body)}; both versions stay loaded")
    write_state(server.store, server.model, (new.version, new_archive), (old_version, old_archive))
    say(f"{server.model}: {old_version} -> {new.version}; `make rollback` restores {old_version}")
    return old_version, new.version


def rollback(server: Server, **kwargs) -> tuple[str, str]:
    """Roll the previous version of the last rollout out again: (the version left, the version restored)."""
    state = read_state(server.store)
    running = server.default_version()
    if running != state["current"]["version"]:
        raise RolloutError(
            f"the server serves version {running}, but the last rollout made {state['current']['version']} the default "
            f"({server.store / STATE_FILE}); to serve {state['previous']['version']} again: "
            f"make rollout MAR={server.store / state['previous']['archive']}"
        )
    return rollout(server, server.store / state["previous"]["archive"], **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["rollout", "rollback", "status"])
    parser.add_argument("mar", nargs="?", type=Path, help="rollout: the archive of the new version (make archive writes one)")
    parser.add_argument("--config", type=Path, default=REPO / "config.properties", help="the server's config.properties")
    parser.add_argument("--model", default=MODEL_NAME, help=f"model name (default: {MODEL_NAME})")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=DRAIN_SECONDS,
        help=f"after the old version's queue is empty, wait this long for its batch in flight (default: {DRAIN_SECONDS:g})",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds for a version to load, or to drain (default: 300)")
    parser.add_argument(
        "--probe-image", type=Path, default=PROBE_IMAGE, help="the image the new version must answer first (docs/sample.png)"
    )
    args = parser.parse_args(argv)
    if args.action == "rollout" and args.mar is None:
        parser.error("rollout needs the archive: python -m serving.rollout rollout model_store/classifier.mar")
    options = {"drain_seconds": args.drain_seconds, "timeout": args.timeout, "probe_image": args.probe_image}
    try:
        server = Server.from_config(args.config, args.model)
        if args.action == "rollout":
            rollout(server, args.mar, **options)
        elif args.action == "rollback":
            rollback(server, **options)
        else:
            print(json.dumps({"default": server.default_version(), "registered": sorted(server.versions())}))
    except RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
