"""Our serving/proto/inference.proto against the inference.proto inside TorchServe's own jar.

Both are compiled by grpc_tools.protoc into descriptor sets and compared field by field:
what decides wire compatibility is the package, names, field numbers, types, labels and
the methods' streaming shape, not the text of the files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import grpc_tools
import pytest
import ts
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from tests.conftest import REPO

OURS = REPO / "serving" / "proto" / "inference.proto"
JAR = Path(ts.__file__).parent / "frontend" / "model-server.jar"
PACKAGE = "org.pytorch.serve.grpc.inference"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto shipped with grpc_tools
# What ours leaves out on purpose (see the comment at the top of our .proto).
OMITTED_FIELDS = {("PredictionsRequest", "sequence_id"), ("PredictionResponse", "sequence_id"), ("PredictionResponse", "status")}
OMITTED_METHODS = {"StreamPredictions2"}


def compile_descriptor_set(proto: Path, includes: list[Path], out: Path) -> descriptor_pb2.FileDescriptorProto:
    """protoc ``proto`` into a FileDescriptorSet; the descriptor of the file in our package."""
    args = [
        "protoc",
        *(f"-I{path}" for path in includes),
        f"-I{WELL_KNOWN}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        str(proto),
    ]
    assert protoc.main(args) == 0, f"protoc failed on {proto}"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return next(f for f in files if f.package == PACKAGE)


def fields(message: descriptor_pb2.DescriptorProto) -> dict[str, tuple]:
    """name -> (number, type, label, type_name, proto3_optional); map fields are expanded into their entry's key/value."""
    nested = {m.name: m for m in message.nested_type}
    out = {}
    for f in message.field:
        entry = nested.get(f.type_name.rsplit(".", 1)[-1]) if f.type_name else None
        shape = tuple((e.name, e.number, e.type) for e in entry.field) if entry and entry.options.map_entry else ()
        out[f.name] = (f.number, f.type, f.label, f.type_name, f.proto3_optional, shape)
    return out


@pytest.fixture(scope="module")
def descriptors(tmp_path_factory) -> tuple[descriptor_pb2.FileDescriptorProto, descriptor_pb2.FileDescriptorProto]:
    work = tmp_path_factory.mktemp("protos")
    jar_dir = work / "jar"
    with zipfile.ZipFile(JAR) as jar:
        names = set(jar.namelist())
        assert "proto/inference.proto" in names, f"TorchServe's jar has no proto/inference.proto: {JAR}"
        for name in ("proto/inference.proto", "google/rpc/status.proto"):
            jar.extract(name, jar_dir)
    # The jar's inference.proto imports google/rpc/status.proto, which the jar keeps at its root.
    theirs = compile_descriptor_set(jar_dir / "proto/inference.proto", [jar_dir / "proto", jar_dir], work / "theirs.pb")
    ours = compile_descriptor_set(OURS, [OURS.parent], work / "ours.pb")
    return ours, theirs


def test_same_package_and_service(descriptors):
    ours, theirs = descriptors
    assert ours.package == theirs.package == PACKAGE
    assert [s.name for s in ours.service] == [s.name for s in theirs.service] == ["InferenceAPIsService"]


def test_every_method_of_ours_matches_torchserve(descriptors):
    ours, theirs = descriptors

    def shape(m):
        return m.input_type, m.output_type, m.client_streaming, m.server_streaming

    mine = {m.name: shape(m) for m in ours.service[0].method}
    real = {m.name: shape(m) for m in theirs.service[0].method}
    assert set(mine) == {"Ping", "Predictions", "StreamPredictions"}
    assert set(real) - set(mine) == OMITTED_METHODS
    assert {name: real[name] for name in mine} == mine
    assert mine["Ping"] == (".google.protobuf.Empty", f".{PACKAGE}.TorchServeHealthResponse", False, False)
    assert mine["StreamPredictions"][3] is True


def test_every_field_of_ours_matches_torchserve(descriptors):
    ours, theirs = descriptors
    real_messages = {m.name: m for m in theirs.message_type}
    assert {m.name for m in ours.message_type} == set(real_messages)
    for message in ours.message_type:
        mine, real = fields(message), fields(real_messages[message.name])
        assert {name: real[name] for name in mine} == mine, message.name
        assert {(message.name, name) for name in set(real) - set(mine)} <= OMITTED_FIELDS
    request = fields(next(m for m in ours.message_type if m.name == "PredictionsRequest"))
    bytes_type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    string_type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    assert request["input"][0] == 3 and request["input"][5] == (("key", 1, string_type), ("value", 2, bytes_type))
    response = fields(next(m for m in ours.message_type if m.name == "PredictionResponse"))
    assert response["prediction"][:2] == (1, bytes_type)


def test_omitted_parts_still_exist_in_torchserve(descriptors):
    """If TorchServe renames what we skip, the list above is stale and this says so."""
    _, theirs = descriptors
    real = {(m.name, f.name) for m in theirs.message_type for f in m.field}
    assert real >= OMITTED_FIELDS
    assert {m.name for m in theirs.service[0].method} >= OMITTED_METHODS
