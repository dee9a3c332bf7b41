"""Which model file each backend runs, and which files an archive for a backend must carry.

Standard library only: `make` asks :func:`archive_artifacts` (through ``python -m serving.archive
--print-artifacts``) which files an archive needs while it reads the Makefile, with the system Python,
before ``.venv`` (and torch) may exist.
"""

from __future__ import annotations

ARTIFACTS = {
    "eager": "model.pt2",
    "onnxruntime": "model.onnx",
    "onnxruntime-int8": "model.int8.onnx",
    "openvino": "model.onnx",
    "openvino-bf16": "model.onnx",
    "openvino-int8": "model.int8.onnx",
}
BACKENDS = tuple(ARTIFACTS)


def check_backend(requested: str) -> None:
    if requested not in ARTIFACTS:
        raise ValueError(f"Invalid backend {requested!r}. Only {', '.join(BACKENDS)} are supported.")


def archive_artifacts(requested: str) -> list[str]:
    """The artifacts an archive for ``requested`` carries, so that every fallback of
    :func:`classifier.backends.resolve_backend` finds its file.

    The backend's own, the fp32 ONNX that an -int8 / -bf16 variant uses on a CPU without VNNI / BF16 (it beats
    eager there), and model.pt2 for eager (CUDA, a missing runtime). An fp32 backend leaves out model.int8.onnx
    (24 MB); `make archive` packs exactly this list (tests/tools/test_archive_contents.py).
    """
    check_backend(requested)
    return sorted({ARTIFACTS["eager"], ARTIFACTS[requested], ARTIFACTS[requested.split("-")[0]]})
