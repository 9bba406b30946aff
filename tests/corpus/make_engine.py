"""Write the bad-engine corpus: ``tests/corpus/engine/NAME.engine``, one engine file per defect the loader must
refuse with a typed error (``tests/corpus/test_engine.py`` says which).

    python -m tests.corpus.make_engine [--out DIR]

It builds two small valid CPU engines from the bundled examples (``small_cnn.onnx``, ``mlp.onnx``; for a defect of
an op they lack, one from a one-node model) with every tactic pinned (the first eligible one in the tactics'
stable priority order; nothing is timed), then makes each bad file by unpacking the msgpack header,
editing it, and writing it back with a valid sha256 trailer. Where the defect is not in the embedded manifest
itself, the manifest is edited the same way and its own sha256 recomputed, so the file holds exactly one defect
and reaches the check that should catch it past every integrity check.

The output is a function of the examples, this reprobuild and the machine's environment fingerprint (which the
embedded manifest records): the same checkout on the same machine writes the same bytes.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import numpy as np
import onnx
from onnx import helper, numpy_helper

from reprobuild.builder import AlgorithmSelector, Builder, BuilderConfig
from reprobuild.core.digest import array_digest, canonical_json, sha256_hex
from reprobuild.core.dtypes import np_dtype
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine.format import ALIGNMENT, FORMAT_VERSION, MAGIC
from reprobuild.engine.memory import LayerUse, plan_memory
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ops import get_op
from reprobuild.ops.layer_attributes import attribute_schema
from reprobuild.passes import DEFAULT_PASSES
from reprobuild.registry import default_registry

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(REPO, "examples")
OUT = os.path.join(HERE, "engine")
_PREAMBLE = struct.Struct("<8sIQ")


class FirstEligible(AlgorithmSelector):
    """Pins every layer to its first eligible tactic (stable priority order): no timing, no noise."""

    requires_timing = False
    untimed_reason = "the corpus pins each layer's first eligible tactic"


def build(model: str) -> bytes:
    with open(os.path.join(EXAMPLES, model), "rb") as f:
        return build_model(f.read())


def build_model(model: bytes) -> bytes:
    quiet = Logger(Severity.ERROR)
    network, _ = network_from_onnx_bytes(model, quiet)
    config = BuilderConfig(backend="cpu", warmup=0, iterations=1, runs_per_sample=1,
                           algorithm_selector=FirstEligible())
    return Builder(quiet).build(network, config).engine


def ops_model() -> onnx.ModelProto:
    """A chain of one layer each of LeakyRelu, Pad, Clip, LayerNormalization, Cast and Gather (with constant
    indices), whose run reads attributes (and constants) that their type inference does not: x [4, 6] ->
    y [4, 3] float16."""
    nodes = [helper.make_node("LeakyRelu", ["x"], ["a"], name="leaky", alpha=0.1),
             helper.make_node("Pad", ["a", "pads"], ["b"], name="pad", mode="constant"),
             helper.make_node("Clip", ["b", "lo", "hi"], ["c"], name="clip"),
             helper.make_node("LayerNormalization", ["c", "scale", "shift"], ["d"], name="norm", axis=-1),
             helper.make_node("Cast", ["d"], ["e"], name="cast", to=onnx.TensorProto.FLOAT16),
             helper.make_node("Gather", ["e", "index"], ["y"], name="gather", axis=1)]
    constants = {"pads": np.array([0, 1, 0, 1], np.int64), "lo": np.array(-1.0, np.float32),
                 "hi": np.array(1.0, np.float32), "scale": np.linspace(0.5, 1.5, 8, dtype=np.float32),
                 "shift": np.linspace(-0.1, 0.1, 8, dtype=np.float32), "index": np.array([0, 2, 7], np.int64)}
    graph = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 6])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [4, 3])],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@functools.cache
def build_ops() -> bytes:
    """The engine of ``ops_model``, its layers left as they are (no elementwise fusion)."""
    quiet = Logger(Severity.ERROR)
    network, _ = network_from_onnx_bytes(ops_model().SerializeToString(), quiet)
    passes = tuple(p for p in DEFAULT_PASSES if p != "fuse_elementwise")
    config = BuilderConfig(backend="cpu", warmup=0, iterations=1, runs_per_sample=1, passes=passes,
                           algorithm_selector=FirstEligible())
    return Builder(quiet).build(network, config).engine


def one_node_model(node: Any, x: list[int], outputs: dict[str, list[int]], constants: dict[str, np.ndarray]) -> bytes:
    """A model of one node reading the float input "x" (and constants), for the defects of ops the examples lack."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([node], node.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                              [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, shape)
                               for name, shape in outputs.items()],
                              [numpy_helper.from_array(value, name) for name, value in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def resize_model() -> bytes:
    """x [1, 2, 4, 4] -> nearest Resize with scales [1, 1, 2, 2] -> y [1, 2, 8, 8]."""
    from onnx import helper

    return one_node_model(helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize", mode="nearest"),
                          [1, 2, 4, 4], {"y": [1, 2, 8, 8]}, {"scales": np.array([1, 1, 2, 2], np.float32)})


def topk_model() -> bytes:
    """x [4, 6] -> TopK of 3 along axis 1 -> values, indices [4, 3]."""
    from onnx import helper

    return one_node_model(helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk", axis=1),
                          [4, 6], {"values": [4, 3], "indices": [4, 3]}, {"k": np.array([3], np.int64)})


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


class Engine:
    """An engine file taken apart: its header (a dict), the embedded manifest (a dict) and the weight buffer."""

    def __init__(self, data: bytes) -> None:
        _, _, header_len = _PREAMBLE.unpack_from(data)
        self.header: dict[str, Any] = msgpack.unpackb(data[_PREAMBLE.size:_PREAMBLE.size + header_len], raw=False)
        start = -(-(_PREAMBLE.size + header_len) // ALIGNMENT) * ALIGNMENT
        self.buffer = data[start:-32]
        self.manifest: dict[str, Any] = json.loads(self.header["manifest"])

    def copy(self) -> Engine:
        return copy.deepcopy(self)

    def layer(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The layer of that name in the header and in the embedded manifest."""
        header = next(layer for layer in self.header["layers"] if layer["name"] == name)
        manifest = next(layer for layer in self.manifest["layers"] if layer["name"] == name)
        return header, manifest

    def tensors(self, name: str) -> list[dict[str, Any]]:
        """Every record of the tensor ``name`` (shape and dtype), in the header and in the manifest."""
        h, m = self.header, self.manifest
        groups = [h["inputs"], h["outputs"], h["activations"], h["weights"], m["inputs"], m["outputs"]]
        groups += [layer[k] for layer in m["layers"] for k in ("inputs", "outputs")]
        return [t for group in groups for t in group if t["name"] == name]

    def rewire(self, layer: str, side: str, index: int, tensor: dict[str, Any]) -> None:
        """Make input or output ``index`` of a layer (``side``: "inputs" or "outputs") the tensor ``tensor`` (name,
        shape, dtype), in the header and the manifest."""
        header, manifest = self.layer(layer)
        header[side][index] = tensor["name"]
        manifest[side][index] = dict(tensor)

    def rename(self, old: str, new: str) -> None:
        """Rename a tensor everywhere: bindings, activations, layers, memory plan, manifest."""
        for t in self.tensors(old):
            t["name"] = new
        for layer in self.header["layers"]:
            layer["inputs"] = [new if t == old else t for t in layer["inputs"]]
            layer["outputs"] = [new if t == old else t for t in layer["outputs"]]
        offsets = self.header["memory"]["offsets"]
        if old in offsets:
            offsets[new] = offsets.pop(old)

    def replan(self) -> None:
        """Recompute the memory plan (header and manifest) from the activations' shapes, as the builder does."""
        from reprobuild.core.dtypes import itemsize

        registry = default_registry()
        sizes = {t["name"]: int(np.prod(t["shape"], dtype=object)) * itemsize(t["dtype"])
                 for t in self.header["activations"]}
        uses = [LayerUse(tuple(layer["inputs"]), tuple(layer["outputs"]),
                         bool(getattr(registry.get(layer["op"], layer["tactic"]["name"], layer["tactic"]["version"]),
                                      "aliases_input", False)), layer["workspace_bytes"])
                for layer in self.header["layers"]]
        plan = plan_memory(sizes, uses, [t["name"] for t in self.header["inputs"]],
                           [t["name"] for t in self.header["outputs"]], self.header["memory"]["alignment"])
        self.header["memory"].update(activation_bytes=plan.activation_bytes, workspace_offset=plan.workspace_offset,
                                     workspace_bytes=plan.workspace_bytes, offsets=dict(plan.offsets))
        self.manifest["memory"].update(activation_bytes=plan.activation_bytes, workspace_bytes=plan.workspace_bytes,
                                       context_bytes=plan.context_bytes,
                                       unshared_activation_bytes=plan.unshared_bytes)

    def set_weight(self, name: str, value: np.ndarray) -> None:
        """Replace a weight's bytes with ``value``'s (of its size) and recompute its sha256."""
        w = next(w for w in self.header["weights"] if w["name"] == name)
        raw = np.ascontiguousarray(value, dtype=np_dtype(w["dtype"])).tobytes()
        assert len(raw) == w["nbytes"], (name, len(raw), w["nbytes"])
        self.buffer = self.buffer[:w["offset"]] + raw + self.buffer[w["offset"] + w["nbytes"]:]
        self.redigest_weight(name)

    def redigest_weight(self, name: str) -> None:
        """Recompute a weight's sha256 after its recorded shape or dtype changed (the bytes stay the same)."""
        w = next(w for w in self.header["weights"] if w["name"] == name)
        raw = self.buffer[w["offset"]:w["offset"] + w["nbytes"]]
        w["sha256"] = array_digest(np.frombuffer(raw, dtype=np_dtype(w["dtype"])).reshape(w["shape"]))

    def pack(self, manifest: bytes | None = None) -> bytes:
        """Engine bytes with a valid trailer; the embedded manifest is this one's canonical JSON (or ``manifest``)
        with a matching sha256."""
        header = dict(self.header)
        header["manifest"] = canonical_json(self.manifest) if manifest is None else manifest
        header["manifest_sha256"] = sha256_hex(header["manifest"])
        packed = msgpack.packb(_canonical(header), use_bin_type=True)
        head = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(packed)) + packed
        body = head + b"\0" * (-len(head) % ALIGNMENT) + self.buffer
        return body + hashlib.sha256(body).digest()


# --- the defects ---------------------------------------------------------------------------------------------------
# Each takes a fresh copy of a valid engine (small_cnn: "cnn", mlp: "mlp") and returns the bad file's bytes.


def conv_strides_renamed(cnn: Engine, mlp: Engine) -> bytes:
    for layer in cnn.layer("branch_a"):
        layer["attrs"]["strideS"] = layer["attrs"].pop("strides")
    return cnn.pack()


def concat_axis_renamed(cnn: Engine, mlp: Engine) -> bytes:
    for layer in cnn.layer("concat"):
        layer["attrs"]["axms"] = layer["attrs"].pop("axis")
    return cnn.pack()


def conv_strides_wrong_type(cnn: Engine, mlp: Engine) -> bytes:
    for layer in cnn.layer("branch_a"):
        layer["attrs"]["strides"] = "1,1"
    return cnn.pack()


def conv_strides_wrong_rank(cnn: Engine, mlp: Engine) -> bytes:
    for layer in cnn.layer("branch_a"):
        layer["attrs"]["strides"] = [1]
    return cnn.pack()


def conv_strides_zero(cnn: Engine, mlp: Engine) -> bytes:
    for layer in cnn.layer("branch_b"):
        layer["attrs"]["strides"] = [0, 0]
    return cnn.pack()


def concat_axis_out_of_range(cnn: Engine, mlp: Engine) -> bytes:
    for layer in cnn.layer("concat"):
        layer["attrs"]["axis"] = 7
    return cnn.pack()


def concat_axis_negative(cnn: Engine, mlp: Engine) -> bytes:
    """-3 is axis 1 of the rank-4 inputs in ONNX, but a layer's axis is canonical (non-negative): the kernels
    rely on it, so the loader must refuse it (it ran into a ValueError at execute before)."""
    for layer in cnn.layer("concat"):
        layer["attrs"]["axis"] = -3
    return cnn.pack()


def gemm_unknown_attribute(cnn: Engine, mlp: Engine) -> bytes:
    for layer in mlp.layer("fc3"):
        layer["attrs"]["transC"] = 1
    return mlp.pack()


def wrong_rank(cnn: Engine, mlp: Engine) -> bytes:
    """The network input recorded as [2, 3, 1024] (the same bytes as [2, 3, 32, 32]): the first convolution
    gets an input of rank 3 and a weight of rank 4."""
    for t in cnn.tensors("image"):
        t["shape"] = [2, 3, 1024]
    cnn.header["declared_inputs"] = {"image": [2, 3, 1024]}  # consistently: the defect is the convolution's input
    return cnn.pack()


def conv_weight_wrong_rank(cnn: Engine, mlp: Engine) -> bytes:
    """A convolution weight recorded as [8, 16] instead of [8, 16, 1, 1] (same bytes, re-digested)."""
    for t in cnn.tensors("branch_a.w"):
        t["shape"] = [8, 16]
    cnn.redigest_weight("branch_a.w")
    return cnn.pack()


def layer_output_shape_disagrees(cnn: Engine, mlp: Engine) -> bytes:
    """fc1's output recorded as [8, 64] where its op computes [8, 128]; memory plan recomputed to match."""
    for t in mlp.tensors("a1"):
        t["shape"] = [8, 64]
    mlp.replan()
    return mlp.pack()


def unknown_op(cnn: Engine, mlp: Engine) -> bytes:
    """The only Softmax layer's op renamed, with its attribute schema (so that the schemas match the layers)."""
    for layer in mlp.layer("softmax"):
        layer["op"] = "Frobnicate"
    schemas = mlp.header["attribute_schemas"]
    schemas["Frobnicate"] = schemas.pop("Softmax")
    return mlp.pack()


def schema_missing_for_op(cnn: Engine, mlp: Engine) -> bytes:
    """No attribute schema for Softmax, which the layer 'softmax' uses: its attributes cannot be checked."""
    del mlp.header["attribute_schemas"]["Softmax"]
    return mlp.pack()


def schema_for_unused_op(cnn: Engine, mlp: Engine) -> bytes:
    """A schema for Conv, which no layer of the MLP uses."""
    mlp.header["attribute_schemas"]["Conv"] = attribute_schema(get_op("Conv"))
    return mlp.pack()


def schema_kind_unknown(cnn: Engine, mlp: Engine) -> bytes:
    """Gemm's 'transA' declared of a kind that no ONNX attribute has."""
    mlp.header["attribute_schemas"]["Gemm"]["attributes"]["transA"]["kind"] = "complex"
    return mlp.pack()


def schema_open_requires(cnn: Engine, mlp: Engine) -> bytes:
    """Softmax's schema made open (not closed) while it still requires its attributes: an open schema requires
    none (the builder writes one only for an op that declares no layer attributes)."""
    mlp.header["attribute_schemas"]["Softmax"]["closed"] = False
    return mlp.pack()


def schema_loosened(cnn: Engine, mlp: Engine) -> bytes:
    """Softmax's schema no longer requires 'axis', and the layer lacks it: the layer would pass the engine's own
    schema, but the schema is not this reprobuild's."""
    mlp.header["attribute_schemas"]["Softmax"]["attributes"]["axis"]["required"] = False
    (softmax,) = [layer for layer in mlp.header["layers"] if layer["op"] == "Softmax"]
    del softmax["attrs"]["axis"]
    return mlp.pack()


def cuda_tactic_in_cpu_engine(cnn: Engine, mlp: Engine) -> bytes:
    cuda = next(t for t in default_registry().candidates("Softmax", "cuda") if t.name == "cuda_Softmax")
    for layer in mlp.layer("softmax"):
        layer["tactic"] = dict(cuda.ref)
    return mlp.pack()


def tactic_family_mismatch(cnn: Engine, mlp: Engine) -> bytes:
    for layer in mlp.layer("fc3"):
        layer["tactic"]["family"] = "conv"
    return mlp.pack()


def output_named_as_weight(cnn: Engine, mlp: Engine) -> bytes:
    """Layer branch_a's output renamed to the name of a weight ("half"), everywhere it appears."""
    cnn.rename("ba", "half")
    return cnn.pack()


def activation_produced_twice(cnn: Engine, mlp: Engine) -> bytes:
    """fc2 writes a1, which fc1 produces too."""
    mlp.rewire("fc2", "outputs", 0, {"name": "a1", "shape": [8, 128], "dtype": "float32"})
    return mlp.pack()


def input_written_by_layer(cnn: Engine, mlp: Engine) -> bytes:
    """The last layer writes the network input instead of its own output."""
    mlp.rewire("softmax", "outputs", 0, {"name": "input", "shape": [8, 64], "dtype": "float32"})
    return mlp.pack()


def layer_reads_undefined_tensor(cnn: Engine, mlp: Engine) -> bytes:
    mlp.rewire("fc3", "inputs", 0, {"name": "nowhere", "shape": [8, 96], "dtype": "float32"})
    return mlp.pack()


def activation_never_written(cnn: Engine, mlp: Engine) -> bytes:
    """An activation that is neither a network input nor written by any layer, read by fc3: its memory would be
    uninitialised."""
    mlp.header["activations"].append({"name": "ghost", "shape": [8, 96], "dtype": "float32"})
    mlp.rewire("fc3", "inputs", 0, {"name": "ghost", "shape": [8, 96], "dtype": "float32"})
    mlp.replan()
    return mlp.pack()


def duplicate_layer_names(cnn: Engine, mlp: Engine) -> bytes:
    for layer in mlp.layer("fc2"):
        layer["name"] = "fc1"
    return mlp.pack()


def rank_65(cnn: Engine, mlp: Engine) -> bytes:
    for t in mlp.tensors("input"):
        t["shape"] = [8, 64] + [1] * 63
    return mlp.pack()


def dims_overflow_int64(cnn: Engine, mlp: Engine) -> bytes:
    """Every dimension below 2**40, but their product (2**93 elements) far beyond int64."""
    for t in mlp.tensors("input"):
        t["shape"] = [2**31, 2**31, 2**31]
    return mlp.pack()


def dim_2_40(cnn: Engine, mlp: Engine) -> bytes:
    for t in mlp.tensors("input"):
        t["shape"] = [2**40, 64]
    return mlp.pack()


def negative_dim(cnn: Engine, mlp: Engine) -> bytes:
    for t in mlp.tensors("input"):
        t["shape"] = [-8, 64]
    return mlp.pack()


def memory_offset_out_of_range(cnn: Engine, mlp: Engine) -> bytes:
    """The memory plan places "probs" past the end of the activation arena."""
    mlp.header["memory"]["offsets"]["probs"] = 2**40
    return mlp.pack()


def terabyte_activations(cnn: Engine, mlp: Engine) -> bytes:
    """A consistent engine (memory plan and manifest included) whose batch is 2**39: 448 TiB of activations per
    execution context, which no machine has."""
    for name in [t["name"] for t in mlp.header["activations"]]:
        for t in mlp.tensors(name):
            t["shape"] = [2**39, *t["shape"][1:]]
    mlp.header["declared_inputs"] = {"input": ["N", *mlp.header["declared_inputs"]["input"][1:]]}  # a dynamic batch
    mlp.replan()
    return mlp.pack()


def binding_dtype_disagrees(cnn: Engine, mlp: Engine) -> bytes:
    """The output binding says float16; the layer producing "probs" (and the activation) are float32."""
    for t in (*mlp.header["outputs"], *mlp.manifest["outputs"]):
        t["dtype"] = "float16"
    return mlp.pack()


def binding_shape_disagrees(cnn: Engine, mlp: Engine) -> bytes:
    for t in (*mlp.header["outputs"], *mlp.manifest["outputs"]):
        t["shape"] = [8, 5]
    return mlp.pack()


def declared_shape_wrong_rank(cnn: Engine, mlp: Engine) -> bytes:
    """The model's declared shape of 'input' recorded with one dimension too many."""
    mlp.header["declared_inputs"] = {"input": [8, 64, 1]}
    return mlp.pack()


def declared_shape_static_dim_disagrees(cnn: Engine, mlp: Engine) -> bytes:
    """A static declared dimension (16) that is not the input's (8): the advice it gives would be wrong."""
    mlp.header["declared_inputs"] = {"input": [16, 64]}
    return mlp.pack()


def declared_shape_of_unknown_input(cnn: Engine, mlp: Engine) -> bytes:
    mlp.header["declared_inputs"] = {**mlp.header["declared_inputs"], "nowhere": ["N"]}
    return mlp.pack()


def layers_out_of_order(cnn: Engine, mlp: Engine) -> bytes:
    """fc2 listed before fc1, whose output it reads."""
    for doc in (mlp.header, mlp.manifest):
        layers = doc["layers"]
        layers[0], layers[1] = layers[1], layers[0]
    return mlp.pack()


def resize_sizes_contradict_input(cnn: Engine, mlp: Engine) -> bytes:
    """A Resize (nearest, scales [1, 1, 2, 2]) whose input is recorded with 3 channels, where its attributes keep
    the channel axis (not among its resized axes) at 2: it would compute [1, 3, 8, 8] and declares [1, 2, 8, 8]
    (an AssertionError at run time, found by the fuzz campaign, before the loader checked the kept axes)."""
    resize = Engine(build_model(resize_model()))
    for t in resize.tensors("x"):
        t["shape"] = [1, 3, 4, 4]
    resize.header["declared_inputs"] = {"x": [1, 3, 4, 4]}
    resize.replan()
    return resize.pack()


def topk_axis_negative(cnn: Engine, mlp: Engine) -> bytes:
    """A TopK layer whose axis is -1 (the last axis in ONNX), where a layer's axis is canonical: its type inference
    took it for axis 1, its computation did not (an AssertionError at run time, found by the fuzz campaign)."""
    topk = Engine(build_model(topk_model()))
    for layer in topk.layer("topk"):
        layer["attrs"]["axis"] = -1
    return topk.pack()


def embedded_manifest_fake_tactic(cnn: Engine, mlp: Engine) -> bytes:
    """The embedded manifest names a tactic the header does not use (its digest is valid)."""
    mlp.layer("fc3")[1]["tactic"]["name"] = "cpu_fastest_ever"
    return mlp.pack()


def embedded_manifest_other_attrs(cnn: Engine, mlp: Engine) -> bytes:
    mlp.layer("fc3")[1]["attrs"]["transB"] = 1
    return mlp.pack()


def embedded_manifest_missing_layer(cnn: Engine, mlp: Engine) -> bytes:
    del mlp.manifest["layers"][-1]
    return mlp.pack()


def embedded_manifest_not_json(cnn: Engine, mlp: Engine) -> bytes:
    return mlp.pack(manifest=b"{not json")


# Attributes (and constants) that only the run read: each engine loaded, and its run failed with a ValueError,
# KeyError or IndexError (exit 1). The loader now checks every attribute a layer holds against what its op's
# layers hold (reprobuild.ops.layer_attributes), the ranges in the op's type inference, and constant indices.


def softmax_axis_negative(cnn: Engine, mlp: Engine) -> bytes:
    """-1 is the last axis in ONNX, but a layer's axis is canonical (non-negative): the run reshaped with it."""
    for layer in mlp.layer("softmax"):
        layer["attrs"]["axis"] = -1
    return mlp.pack()


def _without(engine: Engine, layer_name: str, key: str) -> bytes:
    for layer in engine.layer(layer_name):
        del layer["attrs"][key]
    return engine.pack()


def maxpool_dilations_deleted(cnn: Engine, mlp: Engine) -> bytes:
    """Its type inference reads dilations with a default, the reference tactic's run without one (the pool is
    pinned to that tactic, which needs no workspace)."""
    reference = next(t for t in default_registry().candidates("MaxPool", "cpu") if t.name == "cpu_MaxPool")
    for layer in cnn.layer("pool"):
        layer["tactic"] = dict(reference.ref)
    return _without(cnn, "pool", "dilations")


def leakyrelu_alpha_deleted(cnn: Engine, mlp: Engine) -> bytes:
    return _without(Engine(build_ops()), "leaky", "alpha")


def clip_max_deleted(cnn: Engine, mlp: Engine) -> bytes:
    return _without(Engine(build_ops()), "clip", "max")


def cast_saturate_deleted(cnn: Engine, mlp: Engine) -> bytes:
    return _without(Engine(build_ops()), "cast", "saturate")


def pad_value_deleted(cnn: Engine, mlp: Engine) -> bytes:
    return _without(Engine(build_ops()), "pad", "value")


def layernorm_epsilon_deleted(cnn: Engine, mlp: Engine) -> bytes:
    return _without(Engine(build_ops()), "norm", "epsilon")


def gather_index_out_of_range(cnn: Engine, mlp: Engine) -> bytes:
    """Gather's constant indices [0, 2, 7] made [0, 2, 9], for an axis of 8 (the weight's bytes and digest)."""
    ops = Engine(build_ops())
    name = ops.layer("gather")[0]["inputs"][1]
    ops.set_weight(name, np.array([0, 2, 9], np.int64))
    return ops.pack()


DEFECTS: dict[str, Callable[[Engine, Engine], bytes]] = {
    f.__name__: f for f in (
        conv_strides_renamed, concat_axis_renamed, conv_strides_wrong_type, conv_strides_wrong_rank,
        conv_strides_zero, concat_axis_out_of_range, concat_axis_negative, gemm_unknown_attribute, wrong_rank,
        conv_weight_wrong_rank,
        layer_output_shape_disagrees, unknown_op, schema_missing_for_op, schema_for_unused_op, schema_kind_unknown,
        schema_open_requires, schema_loosened, cuda_tactic_in_cpu_engine, tactic_family_mismatch,
        output_named_as_weight, activation_produced_twice, input_written_by_layer, layer_reads_undefined_tensor,
        activation_never_written, duplicate_layer_names, rank_65, dims_overflow_int64, dim_2_40, negative_dim,
        memory_offset_out_of_range, terabyte_activations, binding_dtype_disagrees, binding_shape_disagrees,
        declared_shape_wrong_rank, declared_shape_static_dim_disagrees, declared_shape_of_unknown_input,
        layers_out_of_order, resize_sizes_contradict_input, topk_axis_negative, embedded_manifest_fake_tactic,
        embedded_manifest_other_attrs, embedded_manifest_missing_layer, embedded_manifest_not_json,
        softmax_axis_negative, maxpool_dilations_deleted, leakyrelu_alpha_deleted, clip_max_deleted,
        cast_saturate_deleted, pad_value_deleted, layernorm_epsilon_deleted, gather_index_out_of_range,
    )
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=OUT, help=f"where to write the files (default: {OUT})")
    args = parser.parse_args(argv)
    cnn, mlp = Engine(build("small_cnn.onnx")), Engine(build("mlp.onnx"))
    os.makedirs(args.out, exist_ok=True)
    for name, make in DEFECTS.items():
        data = make(cnn.copy(), mlp.copy())
        path = os.path.join(args.out, f"{name}.engine")
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}  {len(data)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
