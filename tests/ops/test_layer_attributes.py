"""The attributes each op's layers hold (``reprobuild.ops.layer_attributes``), which the engine loader checks every
layer against: derived from the ops' ONNX attributes, which must agree with ``onnx.defs`` (names, kinds, required
flags and defaults, version by version), or declared for the ops that rewrite their attributes, which must agree
with what their ``convert`` and the graph passes really emit over ONNX's node test suite and the bundled
examples."""

from __future__ import annotations

import glob
import os
import warnings
from typing import Any

import pytest
from onnx import AttributeProto, defs, helper

from reprobuild.core.logger import Logger, Severity
from reprobuild.engine.format import _kind_fits
from reprobuild.ops import BuildTimeOp, all_ops
from reprobuild.ops.base import ABSENT, REQUIRED
from reprobuild.ops.layer_attributes import CANONICAL, canonicalizes, layer_attributes
from tests.helpers import EXAMPLES

KINDS = {AttributeProto.INT: "int", AttributeProto.FLOAT: "float", AttributeProto.STRING: "string",
         AttributeProto.INTS: "ints", AttributeProto.FLOATS: "floats", AttributeProto.STRINGS: "strings",
         AttributeProto.TENSOR: "tensor", AttributeProto.SPARSE_TENSOR: "sparse_tensor",
         AttributeProto.GRAPH: "graph", AttributeProto.GRAPHS: "graphs", AttributeProto.TENSORS: "tensors",
         AttributeProto.TYPE_PROTO: "type_proto"}

LAYER_OPS = [o for o in all_ops() if not isinstance(o, BuildTimeOp) and o.lowered_to is None]


def _onnx_default(attribute: Any) -> Any:
    value = helper.get_attribute_value(attribute.default_value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return tuple(v.decode() if isinstance(v, bytes) else v for v in value)
    return value


@pytest.mark.parametrize("opdef", [o for o in all_ops() if not o.internal and not o.domain], ids=lambda o: o.op)
def test_declared_onnx_attributes_agree_with_onnx_defs(opdef: Any) -> None:
    """Names and kinds per version; for an op whose layers hold its ONNX attributes as they are, also ONNX's
    required flags (declared REQUIRED) and defaults (declared equal), since its layers are derived from them."""
    for version in opdef.versions:
        schema = defs.get_schema(opdef.op, version, "")
        mine = {k: a for k, a in opdef.attributes.items() if a.exists_in(version)}
        assert sorted(mine) == sorted(schema.attributes), f"{opdef.op} version {version}"
        for key, attribute in schema.attributes.items():
            assert mine[key].kind == KINDS[attribute.type], f"{opdef.op} v{version} {key}"
            if canonicalizes(type(opdef)):
                continue  # its convert decides what its layers hold: checked against CANONICAL below
            if attribute.required:
                assert mine[key].default is REQUIRED, f"{opdef.op} v{version} {key}: ONNX requires it"
            elif attribute.default_value.name:
                expected = _onnx_default(attribute)
                got = mine[key].default
                assert got == pytest.approx(expected) if isinstance(expected, float) else got == expected, \
                    f"{opdef.op} v{version} {key}: default {got!r}, ONNX's {expected!r}"


def test_every_op_that_rewrites_its_attributes_declares_its_layers() -> None:
    undeclared = sorted(o.layer_op for o in LAYER_OPS if canonicalizes(type(o)) and o.layer_op not in CANONICAL)
    assert not undeclared, "declare these ops' layer attributes in reprobuild.ops.layer_attributes.CANONICAL"
    layer_ops = {o.layer_op for o in LAYER_OPS}
    assert not sorted(set(CANONICAL) - layer_ops), "CANONICAL names ops that are not layer ops"
    assert all(layer_attributes(o) is not None for o in LAYER_OPS)


def _networks() -> list[tuple[str, Any]]:
    """ONNX's node test suite and the bundled examples, parsed; each also after the default graph passes (which
    make the internal ops)."""
    from reprobuild.builder import BuilderConfig
    from reprobuild.conformance.cases import node_cases
    from reprobuild.conformance.runner import parse_case
    from reprobuild.frontend import network_from_onnx_path
    from reprobuild.passes import run_passes

    passes = BuilderConfig().effective_passes
    networks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in node_cases():
            try:
                network, _ = parse_case(case)
            except Exception:  # a case reprobuild refuses: no layers to check
                continue
            networks.append((case.name, network))
        for path in sorted(glob.glob(os.path.join(EXAMPLES, "*.onnx"))):
            if path.endswith("_dynamic.onnx"):  # a dynamic batch: its layers at batch 3
                network = network_from_onnx_path(path, Logger(Severity.ERROR), dynamic={"batch": (1, 8)})[0]
                networks.append((os.path.basename(path), network.specialize({"batch": 3})))
                continue
            networks.append((os.path.basename(path), network_from_onnx_path(path, Logger(Severity.ERROR))[0]))
    with_passes = []
    for name, network in networks:
        try:
            with_passes.append((f"{name} (passes)", run_passes(network, passes)))
        except Exception:
            continue
    return networks + with_passes


def test_every_layer_holds_what_its_op_declares() -> None:
    problems: list[str] = []
    seen: set[str] = set()
    for name, network in _networks():
        for layer in network.layers:
            opdef = next(o for o in LAYER_OPS if o.layer_op == layer.op)
            schema = layer_attributes(opdef)
            assert schema is not None
            attrs = dict(layer.attrs)
            seen.add(layer.op)
            unknown = sorted(set(attrs) - set(schema))
            missing = sorted(k for k, spec in schema.items() if spec.default is REQUIRED and k not in attrs)
            wrong = sorted(k for k in attrs if k in schema and not _kind_fits(schema[k].kind, attrs[k], False))
            if unknown or missing or wrong:
                problems.append(f"{name}: layer {layer.name!r} ({layer.op}): undeclared {unknown}, missing {missing}, "
                                f"of another kind {wrong}")
    assert not problems, "\n".join(problems[:20])
    assert len(seen) > 140, sorted(seen)  # the suite reaches nearly every op
    assert all(spec.default in (REQUIRED, ABSENT) for schema in CANONICAL.values() for spec in schema.values())

