"""The engine file format: round trip, deterministic bytes, and a typed error for every kind of damage."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import FormatError
from reprobuild.engine import Runtime
from reprobuild.engine.format import (
    FORMAT_VERSION,
    MAGIC,
    MAX_HEADER_BYTES,
    _differences,
    check_embedded_manifest,
    deserialize_engine,
)
from reprobuild.engine.plan import EngineOpSchema
from reprobuild.frontend import network_from_onnx_path
from reprobuild.layers._attribute_schemas import ATTRIBUTE_SCHEMAS
from reprobuild.ops import BuildTimeOp, all_ops, get_op
from reprobuild.ops.base import REQUIRED
from reprobuild.ops.layer_attributes import attribute_schema, layer_attributes
from tests.helpers import EXAMPLES, REPO, run_cli


@pytest.fixture(scope="module")
def engine_bytes() -> bytes:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    return Builder().build(network, BuilderConfig(backend="cpu", iterations=1, warmup=0)).engine


def _reseal(body: bytes) -> bytes:
    """Recompute the sha256 trailer, so that a test reaches the check behind it."""
    return body + hashlib.sha256(body).digest()


def _split(data: bytes) -> tuple[dict, bytes]:
    _, _, header_len = struct.unpack_from("<8sIQ", data)
    header = msgpack.unpackb(data[20:20 + header_len], raw=False)
    start = -(-(20 + header_len) // 64) * 64
    return header, data[start:-32]


def _join(header: dict, buffer: bytes) -> bytes:
    packed = msgpack.packb(header, use_bin_type=True)
    head = struct.pack("<8sIQ", MAGIC, FORMAT_VERSION, len(packed)) + packed
    return _reseal(head + b"\0" * (-len(head) % 64) + buffer)


def test_round_trip_gives_header_and_weights(engine_bytes: bytes) -> None:
    header, weights = deserialize_engine(engine_bytes)
    assert header.format == "reprobuild-engine" and header.backend == "cpu"
    assert [w.name for w in header.weights] == sorted(weights)
    for array in weights.values():
        assert not array.flags.writeable
    assert _join(*_split(engine_bytes)) == engine_bytes  # the writer's bytes are canonical msgpack


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:10], "too short"),
    (lambda d: b"NOTANENG" + d[8:], "not a reprobuild engine"),
    (lambda d: d[:8] + struct.pack("<I", FORMAT_VERSION + 1) + d[12:], "newer than"),
    (lambda d: d[:12] + struct.pack("<Q", MAX_HEADER_BYTES + 1) + d[20:], "limit"),
    (lambda d: d[:12] + struct.pack("<Q", len(d)) + d[20:], "truncated"),
    (lambda d: d[:-100] + bytes([d[-100] ^ 1]) + d[-99:], "sha256 trailer"),
    (lambda d: d[:-1], "sha256 trailer"),
    (lambda d: _reseal(d[:20] + b"\xc1" + d[21:-32]), "not valid msgpack"),
], ids=["short", "magic", "version", "header_cap", "header_past_end", "bit_flip", "truncated", "bad_msgpack"])
def test_damaged_engines_are_refused(engine_bytes: bytes, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FormatError, match=message):
        deserialize_engine(damage(engine_bytes))


@pytest.mark.parametrize("version", [4, 5])
def test_an_engine_of_a_previous_format_is_refused_naming_both_versions(version: int,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Engines written before issue 21 (format 4: normalizer-1 tactic identities, which cannot be compared with
    this installation's) and during it (format 5: no attribute schemas, which the loader checks layers against) are
    refused by the runtime and every command, with the fix."""
    old = Path(REPO, "tests", "fixtures", "engines", f"small_cnn.format{version}.engine")
    with pytest.raises(FormatError, match=rf"engine format version {version} is different from the version this "
                                          rf"runtime reads \({FORMAT_VERSION}\); rebuild the engine"):
        Runtime().deserialize_engine(old.read_bytes())
    code, _, err = run_cli(capsys, "inspect", str(old))
    assert code == 4 and f"engine format version {version} is different from the version this runtime reads " \
                         f"({FORMAT_VERSION})" in err


def _with_manifest(engine_bytes: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    header, buffer = _split(engine_bytes)
    doc = json.loads(header["manifest"])
    edit(doc)
    header["manifest"] = json.dumps(doc, sort_keys=True).encode()
    header["manifest_sha256"] = hashlib.sha256(header["manifest"]).hexdigest()
    return _join(header, buffer)


def test_an_embedded_manifest_of_another_shape_is_read_through_the_manifest_schema(engine_bytes: bytes) -> None:
    """The load compares the embedded manifest's JSON with the header without the manifest schema; JSON of another
    shape than the builder writes goes through the schema: a field with a default may be left out, a wrongly typed
    one is refused naming it."""
    header, _ = deserialize_engine(_with_manifest(engine_bytes, lambda doc: doc.pop("pinned_inputs")))
    assert header.format == "reprobuild-engine"

    def bad_version(doc: dict) -> None:
        doc["layers"][0]["tactic"]["version"] = "one"

    with pytest.raises(FormatError, match=r"embedded manifest does not match the manifest schema(.|\n)*"
                                          r"layers\.0\.tactic\.(TacticRef\.)?version: Input should be a valid integer"):
        deserialize_engine(_with_manifest(engine_bytes, bad_version))


def test_header_with_an_unknown_field_is_refused(engine_bytes: bytes) -> None:
    header, buffer = _split(engine_bytes)
    header["extra"] = 1
    with pytest.raises(FormatError, match="extra"):
        deserialize_engine(_join(header, buffer))


def test_header_with_a_wrongly_typed_field_is_refused(engine_bytes: bytes) -> None:
    header, buffer = _split(engine_bytes)
    header["layers"][0]["workspace_bytes"] = "12"
    with pytest.raises(FormatError, match="workspace_bytes"):
        deserialize_engine(_join(header, buffer))


def test_weights_must_tile_the_buffer_exactly(engine_bytes: bytes) -> None:
    header, buffer = _split(engine_bytes)
    buffer += b"\0" * 64
    with pytest.raises(FormatError, match=r"buffer is \d+ bytes; its header records"):
        deserialize_engine(_join(header, buffer))
    header["buffer_nbytes"] = len(buffer)
    with pytest.raises(FormatError, match="tile"):
        deserialize_engine(_join(header, buffer))


def test_weights_must_be_sorted(engine_bytes: bytes) -> None:
    header, buffer = _split(engine_bytes)
    first, second = header["weights"][0], header["weights"][1]
    first["name"], second["name"] = second["name"], first["name"]
    with pytest.raises(FormatError, match="sorted"):
        deserialize_engine(_join(header, buffer))


def test_a_tampered_weight_is_detected_by_its_own_digest(engine_bytes: bytes) -> None:
    header, buffer = _split(engine_bytes)
    first = header["weights"][0]
    patched = bytearray(buffer)
    patched[first["offset"]] ^= 0xFF
    with pytest.raises(FormatError, match=f"{first['name']}.*sha256"):
        deserialize_engine(_join(header, bytes(patched)))


def test_engine_embeds_the_pinned_manifest(engine_bytes: bytes) -> None:
    from reprobuild.manifest.io import pinned_from_json

    header, _ = deserialize_engine(engine_bytes)
    pinned = pinned_from_json(header.manifest)
    assert [layer.name for layer in pinned.layers] == [layer.name for layer in header.layers]
    assert pinned.config.backend == "cpu"
    assert np.dtype(header.inputs[0].dtype) == np.float32


def test_the_engine_carries_the_attribute_schema_of_each_op_its_layers_use(engine_bytes: bytes) -> None:
    """Format 6: one schema per op the layers use, as the op definition declares it, and no other; the embedded
    manifest does not record them and its comparison with the header ignores them."""
    header, _ = deserialize_engine(engine_bytes)
    ops = sorted({layer.op for layer in header.layers})
    assert sorted(header.attribute_schemas) == ops and "Conv" in ops
    assert {op: s.model_dump() for op, s in header.attribute_schemas.items()} == {
        op: attribute_schema(get_op(op)) for op in ops}
    conv = header.attribute_schemas["Conv"]
    assert conv.closed and not conv.names_allowed and conv.attributes["strides"].kind == "ints"
    assert "attribute_schemas" not in json.loads(header.manifest)
    assert _differences(header, json.loads(header.manifest)) == []
    check_embedded_manifest(header)


def test_every_layer_op_has_a_closed_schema_that_an_engine_header_accepts() -> None:
    """What the builder writes for any op is a valid header entry (else a build would stop on an invalid header),
    and it says what ``layer_attributes`` declares: closed, with the same names, kinds and required ones."""
    layer_ops = [o for o in all_ops() if not isinstance(o, BuildTimeOp) and o.lowered_to is None]
    assert len(layer_ops) > 100
    for opdef in layer_ops:
        schema = EngineOpSchema.model_validate(attribute_schema(opdef))
        declared = layer_attributes(opdef)
        assert declared is not None and schema.closed and not schema.names_allowed, opdef.op
        assert {k: (a.kind, a.required) for k, a in schema.attributes.items()} == {
            k: (a.kind, a.default is REQUIRED) for k, a in declared.items()}, opdef.op


def test_a_schema_of_a_built_in_op_is_this_reprobuilds(engine_bytes: bytes) -> None:
    """An engine cannot loosen the checks of its own layers: its schema of a built-in op must be the installed one
    (``layers/_attribute_schemas.py``), whatever the layers hold."""
    header, buffer = _split(engine_bytes)
    header["attribute_schemas"]["Concat"]["attributes"]["axis"]["required"] = False
    with pytest.raises(FormatError, match=r"attribute schema for op 'Concat' that is not this reprobuild's \(attribute "
                                          r"'axis': the engine has \{'kind': 'int', 'required': False\}, this "
                                          r"reprobuild \{'kind': 'int', 'required': True\}\)"):
        deserialize_engine(_join(header, buffer))
    header["attribute_schemas"]["Concat"].update(closed=False, attributes={"axis": {"kind": "int", "required": False}})
    with pytest.raises(FormatError, match="attribute schema for op 'Concat' that is not this reprobuild's"):
        deserialize_engine(_join(header, buffer))


def test_an_open_schema_checks_kinds_and_what_type_inference_reads(engine_bytes: bytes,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An open schema (what a plugin's op that rewrites its attributes and declares none gets): an unknown
    attribute passes, a missing one is named when the op's type inference reads it, and with ``names_allowed`` an
    "int" attribute may hold a name (then left to the type inference). Concat stands in for a plugin's op: this
    reprobuild's schema of it is taken out of the installed table."""
    monkeypatch.delitem(ATTRIBUTE_SCHEMAS, "Concat")
    header, buffer = _split(engine_bytes)
    schema = header["attribute_schemas"]["Concat"]
    schema.update(closed=False, attributes={"axis": {"kind": "int", "required": False}})
    (concat,) = [layer for layer in header["layers"] if layer["op"] == "Concat"]
    concat["attrs"] = {"axis": concat["attrs"]["axis"], "extra": 1}
    with pytest.raises(FormatError, match="embedded manifest disagrees with its header: layer 'concat' attributes"):
        deserialize_engine(_join(header, buffer))  # the layer checks pass; the manifest records other attributes
    concat["attrs"] = {"axis": "one"}
    with pytest.raises(FormatError, match=r"layer 'concat' \(op Concat\): attribute 'axis' is str 'one'; Concat's "
                                          r"'axis' is an integer"):
        deserialize_engine(_join(header, buffer))
    schema["names_allowed"] = True
    with pytest.raises(FormatError, match=r"layer 'concat' \(op Concat\): its attributes \{'axis': 'one'\} do not fit "
                                          r"its inputs"):
        deserialize_engine(_join(header, buffer))
    concat["attrs"] = {}
    with pytest.raises(FormatError, match=r"layer 'concat' \(op Concat\) has no attribute 'axis', which Concat needs; "
                                          r"its attributes are \[\]"):
        deserialize_engine(_join(header, buffer))
