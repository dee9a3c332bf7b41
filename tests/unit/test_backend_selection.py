import pytest
import torch

from classifier.backends import ARTIFACTS, BACKENDS, cpu_flags, resolve_backend, torch_threads

CPU = torch.device("cpu")
ALL_FILES = set(ARTIFACTS.values())
MODERN = {"avx512f", "avx512_vnni", "avx512_bf16"}


def resolve(requested, flags=MODERN, files=ALL_FILES, device=CPU, installed=("onnxruntime", "openvino")):
    return resolve_backend(requested, set(flags), set(files), device, lambda m: m in installed)


@pytest.mark.parametrize("name", BACKENDS)
def test_modern_cpu_runs_what_is_asked(name):
    assert resolve(name) == (name, None)


def test_bf16_without_cpu_support_falls_back_to_fp32_of_the_same_runtime():
    kind, reason = resolve("openvino-bf16", flags={"avx2", "avx512_vnni"})
    assert kind == "openvino" and "bf16" in reason


@pytest.mark.parametrize("name", ["onnxruntime-int8", "openvino-int8"])
def test_int8_without_vnni_falls_back_to_fp32(name):
    kind, reason = resolve(name, flags={"avx2", "avx512f"})
    assert kind == name.removesuffix("-int8") and "VNNI" in reason


def test_amx_counts_as_vnni_and_bf16():
    assert resolve("openvino-int8", flags={"amx_int8"}) == ("openvino-int8", None)
    assert resolve("openvino-bf16", flags={"amx_bf16"}) == ("openvino-bf16", None)


def test_missing_runtime_or_artifact_falls_back_to_eager():
    kind, reason = resolve("openvino-int8", installed=("onnxruntime",))
    assert kind == "eager" and "openvino" in reason
    kind, reason = resolve("onnxruntime-int8", files={"model.pt2"})
    assert kind == "eager" and "model.int8.onnx" in reason


def test_cuda_runs_eager():
    kind, reason = resolve("openvino-int8", device=torch.device("cuda:0"))
    assert kind == "eager" and "cuda:0" in reason


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="eager, onnxruntime"):
        resolve("tensorrt")


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags\t\t: fpu avx512_vnni sse\n")
    assert cpu_flags(info) == {"fpu", "avx512_vnni", "sse"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_torch_keeps_its_threads_only_where_it_runs_the_network():
    assert torch_threads("eager", 4) == 4
    for kind in BACKENDS:
        if kind != "eager":
            assert torch_threads(kind, 4) == 1, kind
