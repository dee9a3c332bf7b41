"""Bounded closed-loop clients for a stop under load: what every request got while the server drained and stopped.

    with StopLoad(http=("127.0.0.1", 8080), grpc=("127.0.0.1", 7070), image=png) as load:
        load.wait_answers(3)        # every client has been answered a few times: the load is on
        ... stop the server ...
    print(load.summary())           # {"answered": 208, "refused": 8, "reset": 0, "5xx": 0, ...}

Three kinds of client, as real ones behave (``clients``, 8 by default: 4 + 2 + 2):

- ``http-keepalive``: one HTTP/1.1 connection reused while the server allows it (requests.Session, locust);
- ``http-fresh``: a new connection per request (curl);
- ``grpc``: one long-lived channel (HTTP/2), as ``serving.grpc_client.channel`` opens it.

Each outcome is one of: ``answered`` (200 with an answer in the response contract), ``refused`` (the connection was
refused: the server no longer listens; never accepted, so safe to retry), ``reset`` (the connection broke after it was
accepted, with no answer), ``timeout``, ``5xx`` / ``4xx`` (another HTTP status; gRPC codes map to them), or ``bad
answer``. A client stops at its first refusal (the server is gone) or at the bounds: ``seconds`` and
``max_requests``. Used by tests/integration/test_stop_under_load.py, ``make image-check`` and ``make k8s-play``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from loadtests.contract import check_ours

MIX = {"http-keepalive": 4, "http-fresh": 2, "grpc": 2}


@dataclass
class Outcome:
    client: str
    kind: str
    at: float  # time.monotonic() when it came back
    detail: str = ""
    sent: float = 0.0  # time.monotonic() when it was sent
    retry_after: str | None = None  # the answer's Retry-After header


def http_outcome(status: int, body: bytes) -> tuple[str, str]:
    if status != 200:
        return f"{status // 100}xx", f"{status} {body[:120]!r}"
    try:
        problem = check_ours(json.loads(body))
    except ValueError as exc:
        problem = f"not JSON: {exc}"
    return ("bad answer", problem) if problem else ("answered", "")


def grpc_outcome(code_name: str, details: str) -> str:
    """A gRPC failure in the same words: refused only when no connection could be made."""
    if code_name == "UNAVAILABLE" and ("refused" in details.lower() or "failed to connect" in details.lower()):
        return "refused"
    if code_name == "UNAVAILABLE":  # the server's 503 (a dead worker, a full queue), else a broken connection
        return "5xx" if "worker died" in details.lower() or "no worker" in details.lower() else "reset"
    if code_name == "DEADLINE_EXCEEDED":
        return "timeout"
    return "5xx" if code_name in {"INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED", "DATA_LOSS"} else "4xx"


@dataclass
class StopLoad:
    http: tuple[str, int]
    grpc: tuple[str, int] | None
    image: bytes
    mix: dict[str, int] = field(default_factory=lambda: dict(MIX))
    seconds: float = 90.0
    max_requests: int = 2000
    timeout: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._names: list[str] = []

    def __enter__(self) -> StopLoad:
        self._deadline = time.monotonic() + self.seconds
        kinds = [kind for kind, n in self.mix.items() for _ in range(n) if kind != "grpc" or self.grpc]
        for i, kind in enumerate(kinds):
            target = self._grpc_client if kind == "grpc" else self._http_client
            self._names.append(f"{kind}-{i}")
            thread = threading.Thread(target=target, args=(self._names[-1], kind == "http-keepalive"), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, wait: float | None = None) -> None:
        """End the load now (``wait`` None) or let the clients run on until refused, at most ``wait`` seconds."""
        if wait is not None:
            end = time.monotonic() + wait
            for thread in self._threads:
                thread.join(timeout=max(0.0, end - time.monotonic()))
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def _record(self, client: str, kind: str, detail: str = "", sent: float = 0.0, retry_after: str | None = None) -> None:
        with self._lock:
            self.outcomes.append(Outcome(client, kind, time.monotonic(), detail, sent, retry_after))

    def _go_on(self, count: int) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline and count < self.max_requests

    def _http_client(self, name: str, keep_alive: bool) -> None:
        host, port = self.http
        conn: http.client.HTTPConnection | None = None
        count = 0
        while self._go_on(count):
            count += 1
            sent = time.monotonic()
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
                try:
                    conn.connect()
                except ConnectionRefusedError:
                    self._record(name, "refused", sent=sent)
                    return
                except OSError as exc:
                    self._record(name, "reset", f"connect: {exc!r}", sent)
                    return
            try:
                conn.request("POST", "/predictions/classifier", body=self.image)
                resp = conn.getresponse()
                body = resp.read()
            except TimeoutError:
                self._record(name, "timeout", sent=sent)
                conn.close()
                conn = None
                continue
            except (OSError, http.client.HTTPException) as exc:  # reset, broken pipe, closed without an answer
                self._record(name, "reset", repr(exc), sent)
                conn.close()
                conn = None
                continue
            kind, detail = http_outcome(resp.status, body)
            self._record(name, kind, detail, sent, resp.getheader("Retry-After"))
            if not keep_alive or resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _grpc_client(self, name: str, _keep_alive: bool) -> None:
        import grpc

        from serving.grpc_client import channel, parse_answer, predictions_request
        from serving.grpc_client import inference_pb2_grpc as stubs

        host, port = self.grpc
        count = 0
        with channel(host, port) as chan:
            stub = stubs.InferenceAPIsServiceStub(chan)
            while self._go_on(count):
                count += 1
                sent = time.monotonic()
                try:
                    response = stub.Predictions(predictions_request(self.image), timeout=self.timeout)
                except grpc.RpcError as exc:
                    kind = grpc_outcome(exc.code().name, exc.details() or "")
                    self._record(name, kind, f"{exc.code().name}: {exc.details()}", sent)
                    if kind == "refused":
                        return
                    continue
                try:
                    answer = parse_answer(response.prediction)
                except Exception as exc:  # the handler's error body (PredictionError)
                    self._record(name, "4xx", str(exc), sent)
                    continue
                problem = check_ours(answer)
                self._record(name, "bad answer" if problem else "answered", problem or "", sent)

    # ---------------------------------------------------------------- reading the results
    def clients(self) -> list[str]:
        return list(self._names)

    def wait_answers(self, per_client: int, timeout: float = 120) -> None:
        """Block until every client has been answered ``per_client`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                counts = Counter(o.client for o in self.outcomes if o.kind == "answered")
            if all(counts[name] >= per_client for name in self._names):
                return
            if self.failures():
                break
            time.sleep(0.05)
        raise TimeoutError(f"not every client was answered {per_client} times in {timeout:.0f} s: {self.summary()}")

    def summary(self, since: float | None = None) -> dict[str, int]:
        with self._lock:
            return dict(Counter(o.kind for o in self.outcomes if since is None or o.at >= since))

    def failures(self) -> list[Outcome]:
        """Outcomes a drain must never produce: anything but answered and refused."""
        with self._lock:
            return [o for o in self.outcomes if o.kind not in {"answered", "refused"}]
