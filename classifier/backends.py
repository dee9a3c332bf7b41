"""Inference backends behind one small interface, chosen when the model is loaded.

A backend (:class:`Backend`) is a callable ``(N, 3, S, S) float32 tensor -> (logits, embedding)`` as
float32 CPU tensors, with a ``name`` saying which one runs. Only the runtime that is asked for is imported,
so a server never pays for (or fails on) runtimes it does not use.

| name               | artifact          | runtime                                   |
|--------------------|-------------------|-------------------------------------------|
| eager              | model.pt2         | PyTorch (CPU, or CUDA with fp16 autocast) |
| onnxruntime        | model.onnx        | ONNX Runtime, fp32                        |
| onnxruntime-int8   | model.int8.onnx   | ONNX Runtime, int8 (static QDQ)           |
| openvino           | model.onnx        | OpenVINO, fp32                            |
| openvino-bf16      | model.onnx        | OpenVINO, bf16 (needs AVX512-BF16 or AMX) |
| openvino-int8      | model.int8.onnx   | OpenVINO, int8 (fast with VNNI or AMX)    |

:func:`resolve_backend` turns a request into what this host can run, falling back
(with a reason to log) rather than failing: bf16 without CPU support -> fp32,
int8 without VNNI -> fp32, a missing runtime or artifact -> eager, CUDA -> eager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

# The backend names and their files live in classifier.artifacts (stdlib only, for make); BACKENDS is
# re-exported because every consumer that builds a backend also offers the choice of one.
from classifier.artifacts import ARTIFACTS, check_backend
from classifier.artifacts import BACKENDS as BACKENDS

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """What every backend is: its name (what runs after any fallback) and one call per batch."""

    name: str

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


RUNTIME_MODULE = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def select_device(gpu_id: int | str | None, cuda_available: bool) -> torch.device:
    """CUDA device ``gpu_id`` when TorchServe assigned one and CUDA works, else the CPU."""
    if gpu_id is None or gpu_id == "" or not cuda_available:
        return torch.device("cpu")
    return torch.device(f"cuda:{int(gpu_id)}")


def cpu_reason(gpu_id: int | str | None, cuda_available: bool) -> str | None:
    """Why :func:`select_device` chose the CPU (for the log; the GPU image on a host without one), else None."""
    if gpu_id is None or gpu_id == "":
        return "TorchServe assigned no GPU to this worker (no nvidia-smi, or number_of_gpu=0)"
    if not cuda_available:
        return f"TorchServe assigned GPU {gpu_id}, but torch sees no usable CUDA device (driver, toolkit or --gpus missing?)"
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_bf16(flags: set[str]) -> bool:
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def has_vnni(flags: set[str]) -> bool:
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def resolve_backend(
    requested: str, flags: set[str], files: set[str], device: torch.device, importable: Callable[[str], bool]
) -> tuple[str, str | None]:
    """The backend to run and, when it differs from ``requested``, why.

    Args:
        requested: a name from :data:`BACKENDS`.
        flags: CPU feature flags (``/proc/cpuinfo``).
        files: artifact file names present in the model folder.
        device: where the model will run.
        importable: whether a Python module can be imported (injected for tests).
    """
    check_backend(requested)
    if requested == "eager":
        return "eager", None
    if device.type != "cpu":
        return "eager", f"{requested} is a CPU backend; on {device} the eager backend runs instead"
    runtime = requested.split("-")[0]
    if not importable(RUNTIME_MODULE[runtime]):
        return "eager", f"{requested} needs the Python package {RUNTIME_MODULE[runtime]!r}, which is not installed"
    chosen, reason = requested, None
    if requested.endswith("-bf16") and not has_bf16(flags):
        chosen, reason = runtime, "this CPU has no AVX512-BF16/AMX, so bf16 would be emulated; using fp32"
    if requested.endswith("-int8") and not has_vnni(flags):
        chosen, reason = runtime, "this CPU has no VNNI/AMX, so int8 would be slower than fp32; using fp32"
    if ARTIFACTS[chosen] not in files:
        return "eager", f"{ARTIFACTS[chosen]} is not in the archive (make archive BACKEND={requested} adds it)"
    return chosen, reason


class EagerBackend:
    """The torch.export program (model.pt2) run by PyTorch; fp16 autocast on CUDA."""

    name = "eager"

    def __init__(self, artifact: Path, device: torch.device):
        self.device = device
        self.module = torch.export.load(str(artifact)).module().to(device)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            logits, embedding = self.module(batch.to(self.device, non_blocking=True))
        return logits.float().cpu(), embedding.float().cpu()


class OnnxRuntimeBackend:
    def __init__(self, artifact: Path, threads: int, name: str = "onnxruntime"):
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.session.run(None, {self.input: batch.numpy()})
        return torch.from_numpy(logits), torch.from_numpy(embedding)


class OpenVinoBackend:
    def __init__(self, artifact: Path, threads: int, precision: str, name: str = "openvino"):
        import openvino as ov

        self.name = name
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        self.compiled = core.compile_model(core.read_model(str(artifact)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(i) for i in range(2)]

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        results = self.request.infer({0: batch.numpy()})
        # Copy out: the request reuses its output buffers on the next call.
        logits, embedding = (torch.from_numpy(results[out].copy()) for out in self.outputs)
        return logits, embedding


def build_backend(kind: str, model_dir: Path, device: torch.device, threads: int) -> Backend:
    artifact = model_dir / ARTIFACTS[kind]
    if kind == "eager":
        return EagerBackend(artifact, device)
    if kind.startswith("onnxruntime"):
        return OnnxRuntimeBackend(artifact, threads, kind)
    return OpenVinoBackend(artifact, threads, "bf16" if kind.endswith("-bf16") else "f32", kind)


def torch_threads(backend_name: str, threads: int) -> int:
    """How many threads torch's own (OpenMP) pool should have next to ``backend_name``.

    Only the eager backend runs the network in torch. For the others torch does just the small preprocessing
    tensors, and a second OpenMP thread costs more than it gives: libgomp spin-waits after every parallel region,
    so that thread keeps a core busy while OpenVINO's or ONNX Runtime's own pool starts the next inference.
    Measured on the 2-core dev box, batch-1 openvino-int8 right after a photo's preprocessing: 9.4 ms with 2 torch
    threads, 6.4 ms with 1 (docs/optimization.md, section 5).
    """
    return threads if backend_name == "eager" else 1


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def load_backend(requested: str, model_dir: Path, device: torch.device, threads: int | None = None) -> Backend:
    """Resolve ``requested`` for this host, log any fallback, and load it. ``backend.name`` says what runs."""
    files = {p.name for p in model_dir.iterdir()}
    kind, reason = resolve_backend(requested, cpu_flags(), files, device, _importable)
    if reason:
        logger.warning("backend %s -> %s: %s", requested, kind, reason)
    return build_backend(kind, model_dir, device, threads or torch.get_num_threads())
