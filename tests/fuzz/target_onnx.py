"""The ONNX target: mutated models taken through the parser AND a build on the CPU backend (every layer on its first
eligible tactic: nothing is timed, so a build takes milliseconds), whose golden run executes the engine.

The mutations aim where issue 20 found untyped errors: attribute values (auto_pad with strides of 0, Tile and
Expand shapes, axes), deleted and added attributes, input and initializer dimensions and values, opset and
``ir_version`` (2**40), element types, op types, wiring, subgraphs, outputs declared with symbolic dimensions (so
that a mutated shape reaches the builder), and ``Constant`` nodes whose tensor lives in external data (a model must
never read a file beside it, let alone elsewhere: the oracle plants a file in the working directory and fails the
case if its bytes reach the engine).
"""

from __future__ import annotations

import os
import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.frontend import network_from_onnx_bytes
from tests.corpus.make_engine import FirstEligible
from tests.fuzz.case import Case, Target
from tests.fuzz.exercise import ENGINE_CAP, QUIET, Context
from tests.fuzz.forge import STRINGS, SWAPS
from tests.fuzz.mutate import NASTY_FLOATS, NASTY_INTS, mutate_bytes, pick
from tests.fuzz.outcome import Silent
from tests.fuzz.seeds import OPSET, _const, _finish, _vi

#: The bytes of the file a model must not read (planted in the working directory of every ONNX case).
SECRET = b"TOP-SECRET-FUZZ!" * 4
SECRET_NAME = "secret.txt"


def _small_models() -> dict[str, bytes]:
    """Single-purpose models for the ops whose attributes and constant inputs broke builds."""
    f32 = np.float32
    w = np.full((4, 2, 3, 3), 0.1, f32)
    return {
        "conv_same_upper": _finish(
            [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2])],
            [_vi("x", [1, 2, 9, 9])], ["y"], [_const("w", w)], "conv_same_upper"),
        "pool_same_lower": _finish(
            [helper.make_node("MaxPool", ["x"], ["y"], name="pool", auto_pad="SAME_LOWER", kernel_shape=[3, 3],
                              strides=[2, 2])], [_vi("x", [1, 2, 9, 9])], ["y"], [], "pool_same_lower"),
        # outputs of symbolic shape, so that an edited repeats or shape reaches the builder
        "tile": _symbolic(_finish([helper.make_node("Tile", ["x", "repeats"], ["y"], name="tile")], [_vi("x", [2, 3])],
                                  ["y"], [_const("repeats", np.array([2, 2], np.int64))], "tile")),
        "expand": _symbolic(_finish([helper.make_node("Expand", ["c", "shape"], ["e"], name="expand"),
                                     helper.make_node("Add", ["x", "e"], ["y"], name="add")], [_vi("x", [2, 3])],
                                    ["y"], [_const("c", np.array(1.5, f32)),
                                            _const("shape", np.array([2, 3], np.int64))], "expand")),
        "constant": _finish([helper.make_node("Constant", [], ["c"], name="const",
                                              value=numpy_helper.from_array(np.arange(16, dtype=f32), "c")),
                             helper.make_node("Add", ["x", "c"], ["y"], name="add")], [_vi("x", [16])], ["y"], [],
                            "constant"),
    }


def _symbolic(model: bytes) -> bytes:
    proto = onnx.load_model_from_string(model)
    _symbolic_outputs(random.Random(0), proto)
    return proto.SerializeToString()


def _schema_attrs(op: str) -> dict[str, int]:
    try:
        schema = onnx.defs.get_schema(op, OPSET)
    except Exception:  # an op ONNX does not know (a contrib op): no schema
        return {}
    return {name: int(getattr(a.type, "value", 0)) for name, a in schema.attributes.items()}  # the AttrType's number


def _attr_of(rng: random.Random, name: str, kind: int, rank: int = 4) -> onnx.AttributeProto:
    A = onnx.AttributeProto
    if kind == A.INT:
        value: object = pick(rng, (0, -1, 1, 2, rank, rank + 1, *NASTY_INTS[8:14]))
    elif kind == A.INTS:
        value = [pick(rng, (0, -1, 1, 2, 3, 2**31)) for _ in range(pick(rng, (0, 1, 2, 4, 8)))]
    elif kind == A.FLOAT:
        value = pick(rng, NASTY_FLOATS)
    elif kind == A.FLOATS:
        value = [pick(rng, NASTY_FLOATS) for _ in range(rng.randrange(4))]
    elif kind == A.STRING:
        value = pick(rng, STRINGS).encode()
    elif kind == A.STRINGS:
        value = [pick(rng, STRINGS).encode()]
    else:
        value = numpy_helper.from_array(np.asarray(pick(rng, ([], [1.0], [[2**40]], 3))), "t")
    if isinstance(value, list) and not value:  # helper.make_attribute cannot tell the type of an empty list
        return helper.make_attribute(name, [], attr_type=kind)
    return helper.make_attribute(name, value)


def _edit_attr(rng: random.Random, node: onnx.NodeProto) -> str:
    how = rng.randrange(3)
    if how < 2 and node.attribute:
        i = rng.randrange(len(node.attribute))
        old = node.attribute[i]
        if how == 0:
            del node.attribute[i]
            return f"{node.name}: {old.name} deleted"
        new = _attr_of(rng, old.name, old.type if rng.random() < 0.85 else rng.choice([1, 2, 3, 6, 7]))
        node.attribute[i].CopyFrom(new)
        return f"{node.name}: {old.name} = {helper.get_attribute_value(new)!r}"[:120]
    declared = _schema_attrs(node.op_type)
    missing = sorted(set(declared) - {a.name for a in node.attribute})
    name = pick(rng, missing) if missing else "frobnicate"
    node.attribute.append(_attr_of(rng, name, declared.get(name, onnx.AttributeProto.INT)))
    return f"{node.name}: added {name}"


def _auto_pad(rng: random.Random, model: onnx.ModelProto) -> str:
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "MaxPool", "AveragePool", "LpPool", "ConvTranspose")]
    if not nodes:
        return "no conv or pool"
    node = pick(rng, nodes)
    keep = [a for a in node.attribute if a.name not in ("auto_pad", "strides", "pads")]
    del node.attribute[:]
    node.attribute.extend(keep)
    node.attribute.append(helper.make_attribute("auto_pad", pick(rng, ("SAME_UPPER", "SAME_LOWER", "VALID"))))
    node.attribute.append(helper.make_attribute("strides", pick(rng, ([0, 0], [0, 1], [-1, 1], [5, 5], [1], [9, 9]))))
    return f"{node.name}: auto_pad and strides {[helper.get_attribute_value(a) for a in node.attribute[-2:]]}"


def _initializer(rng: random.Random, model: onnx.ModelProto) -> str:
    inits = model.graph.initializer
    if not inits:
        return "no initializer"
    i = rng.randrange(len(inits))
    try:
        array = numpy_helper.to_array(inits[i]).copy()
    except Exception:  # an earlier edit of this case left it unreadable (dims or data type changed): leave it so
        return f"initializer {inits[i].name}: unreadable, left as it is"
    how = rng.randrange(5)
    if how == 4 and array.dtype.kind in "iu" and array.ndim == 1:  # a shape, repeats, pads or axes vector
        array = np.asarray(pick(rng, ([0, 2**43], [2**43, 0], [], [0], [-1, 2], [1] * 9, [2**31, 2**31],
                                      [0] * array.size, [-2] * array.size)), array.dtype)
    elif how == 0 and array.dtype.kind in "iu" and array.size:
        array.reshape(-1)[rng.randrange(array.size)] = pick(rng, (2**43, 0, -1, 2**31, 2**62, -(2**40)))
    elif how == 0 and array.dtype.kind == "f" and array.size:
        array.reshape(-1)[rng.randrange(array.size)] = pick(rng, NASTY_FLOATS)
    elif how == 1:
        array = pick(rng, (np.zeros(0, array.dtype), np.zeros((), array.dtype), array.reshape(-1)[:1]))
    elif how in (2, 4):
        inits[i].dims[:] = [pick(rng, (0, 1, 2**40, -1, 3)) for _ in range(pick(rng, (0, 1, 2, 3)))]
        return f"initializer {inits[i].name}: dims {list(inits[i].dims)} (data unchanged)"
    else:
        inits[i].data_type = pick(rng, (0, 8, 16, 17, 10, 7, 9, 23, 100))
        return f"initializer {inits[i].name}: data type {inits[i].data_type}"
    inits[i].CopyFrom(numpy_helper.from_array(array, inits[i].name))
    return f"initializer {inits[i].name}: {array.tolist() if array.size < 9 else array.shape}"


def _input_dim(rng: random.Random, model: onnx.ModelProto) -> str:
    vi = pick(rng, list(model.graph.input))
    dims = vi.type.tensor_type.shape.dim
    if not dims or rng.random() < 0.2:
        vi.type.tensor_type.elem_type = pick(rng, (0, 8, 16, 10, 7, 9, 17, 100))
        return f"input {vi.name}: element type {vi.type.tensor_type.elem_type}"
    d = dims[rng.randrange(len(dims))]
    if rng.random() < 0.3:
        d.dim_param = pick(rng, ("N", "", "batch"))
    else:
        d.dim_value = pick(rng, (0, -1, 2**40, 2**20, 1, 2**62))
    return f"input {vi.name}: dims {[x.dim_value or x.dim_param for x in dims]}"


def _symbolic_outputs(rng: random.Random, model: onnx.ModelProto) -> str:
    """Every graph output declared with symbolic dimensions, so that a mutated shape is not stopped by the
    declaration (a Tile to [0, 2**43] reaches the builder)."""
    for vi in model.graph.output:
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            d.dim_param = f"{vi.name}_{i}"
    return "outputs with symbolic dimensions"


def _versions(rng: random.Random, model: onnx.ModelProto) -> str:
    if rng.random() < 0.5:
        model.ir_version = pick(rng, (0, 1, 3, 4, 7, 9, 10, 11, 12, 2**40, 2**63 - 1))
        return f"ir_version {model.ir_version}"
    version = pick(rng, (1, 6, 10, 11, 13, 18, 21, 22, 23, 24, 999, 0, -1, 2**40))
    model.opset_import[0].version = version
    return f"opset {version}"


def _external_constant(rng: random.Random, model: onnx.ModelProto) -> str:
    """A Constant node whose tensor's bytes are in an external file, feeding an Add to a graph output."""
    tensor = TensorProto()
    tensor.name, tensor.data_type = "leak", TensorProto.FLOAT
    tensor.dims.extend([len(SECRET) // 4])
    tensor.data_location = TensorProto.EXTERNAL
    location = pick(rng, (SECRET_NAME, f"./{SECRET_NAME}", f"../case/{SECRET_NAME}", "/etc/hostname", "missing.bin",
                          "", f"sub/../{SECRET_NAME}"))
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(SECRET)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    model.graph.node.append(helper.make_node("Constant", [], ["leak"], name="leak", value=tensor))
    model.graph.node.append(helper.make_node("Identity", ["leak"], ["leaked"], name="leak_out"))
    model.graph.output.append(_vi("leaked", [len(SECRET) // 4]))
    return f"Constant with external data at {location!r}"


def _subgraph(rng: random.Random, model: onnx.ModelProto) -> str:
    first = model.graph.input[0].name
    branch = helper.make_graph([helper.make_node("Identity", [first], ["b"], name="inner")], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    model.graph.initializer.append(cond)
    model.graph.node.append(helper.make_node("If", ["cond"], ["branched"], name="if", then_branch=branch,
                                             else_branch=branch))
    model.graph.output.append(helper.make_tensor_value_info("branched", TensorProto.FLOAT, None))
    return "an If node with subgraphs"


def _node(rng: random.Random, model: onnx.ModelProto) -> str:
    node = pick(rng, list(model.graph.node))
    how = rng.randrange(4)
    if how == 0:
        family = next((fam for fam in SWAPS if node.op_type in fam), SWAPS[0])
        node.op_type = pick(rng, (*family, "NoSuchOp", ""))
        return f"{node.name}: op {node.op_type}"
    if how == 1 and node.input:
        names = ("", "nowhere", *(n.output[0] for n in model.graph.node))
        node.input[rng.randrange(len(node.input))] = pick(rng, names)
        return f"{node.name}: rewired"
    if how == 2:
        node.domain = pick(rng, ("com.microsoft", "ai.onnx.ml", "x"))
        return f"{node.name}: domain {node.domain}"
    return _edit_attr(rng, node)


def mutated_model(rng: random.Random, model: bytes) -> tuple[bytes, list[str]]:
    if rng.random() < 0.1:
        return mutate_bytes(rng, model), ["bytes damaged"]
    proto = onnx.load_model_from_string(model)
    notes = []
    for _ in range(rng.randint(1, 2)):
        edit = pick(rng, ("attr", "attr", "attr", "auto_pad", "initializer", "initializer", "input_dim", "versions",
                          "external", "subgraph", "node", "symbolic"))
        if edit == "attr":
            nodes = list(proto.graph.node)
            notes.append(_edit_attr(rng, pick(rng, nodes)))
        else:
            notes.append({"auto_pad": _auto_pad, "initializer": _initializer, "input_dim": _input_dim,
                          "versions": _versions, "external": _external_constant, "subgraph": _subgraph,
                          "node": _node, "symbolic": _symbolic_outputs}[edit](rng, proto))
    return proto.SerializeToString(), notes


def build_model(data: bytes, ctx: Context) -> None:
    """Parse and build (the build's golden run executes the engine); the planted file must not reach it."""
    planted = ctx.case_file(SECRET_NAME, SECRET)
    here = os.getcwd()
    os.chdir(os.path.dirname(planted))  # where a Constant's external data was once looked for
    try:
        network, _ = network_from_onnx_bytes(data, QUIET)
        config = BuilderConfig(backend="cpu", warmup=0, iterations=1, runs_per_sample=1,
                               algorithm_selector=FirstEligible(), max_memory=ENGINE_CAP)
        engine = Builder(QUIET).build(network, config).engine
    finally:
        os.chdir(here)
    if SECRET[:16] in engine:
        raise Silent("the model read a file outside itself (a Constant's external data) into the engine")


_MODELS: dict[str, bytes] = {}


def onnx_build(rng: random.Random, ctx: Context) -> Case:
    if not _MODELS:
        _MODELS.update({seed.name: seed.model for seed in ctx.seeds})
        _MODELS.update(_small_models())
    name = pick(rng, sorted(_MODELS))
    data, notes = mutated_model(rng, _MODELS[name])
    return Case(lambda: build_model(data, ctx), data, ".onnx", [f"{name}:", *notes])


TARGETS = (
    Target("onnx_build", "onnx", onnx_build, 0.05, 120,
           "models (the seeds, and single-purpose Conv/MaxPool auto_pad, Tile, Expand and Constant models) with "
           "attributes changed, deleted or added, auto_pad with hostile strides, initializer values, dims and "
           "types, input dims and element types, opset and ir_version, outputs declared with symbolic dimensions, "
           "Constant tensors in external data (an oracle fails a build that reads the planted file), If "
           "subgraphs, op types, domains and wiring; each "
           "parsed and built on the CPU (nothing timed), the build's golden run executing the engine"),
)
