"""The valid artifacts every fuzz target starts from: small ONNX models, the CPU engines built from them and those
engines' manifests.

The bundled examples (``mlp``, ``small_cnn``) hold few kinds of layer, so three more models ("zoo" models) put the
ops whose run-time code reads attributes and constants the loader's type inference does not (pooling, padding,
activations with parameters, casts, normalization, gathers with constant indices, tiles, expands, resizes) into
engines, where a forged attribute or constant can reach them. Every engine is built with each layer pinned to its
first eligible tactic (nothing timed), so the seeds, and with them every fuzz case, are a function of this
checkout and the machine's environment alone: two campaigns on one machine see the same bytes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.logger import Logger, Severity
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.manifest import manifest_to_json
from tests.corpus.make_engine import EXAMPLES, FirstEligible

QUIET = Logger(Severity.INTERNAL_ERROR)
OPSET = 17


@dataclass(frozen=True)
class Seed:
    """One valid model and what a build makes of it."""

    name: str
    model: bytes  #: the ONNX file
    engine: bytes  #: a CPU engine, every layer on its first eligible tactic
    manifest: bytes  #: the build's manifest (pinned part, evidence, engine record), as ``build`` writes it


def _vi(name: str, shape: Sequence[int], elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _finish(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: Sequence[str],
            inits: list[onnx.TensorProto], name: str) -> bytes:
    """The model's bytes, its outputs declared with the shapes ONNX infers (so the checker accepts it)."""
    graph = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                                                    for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="reprobuild-fuzz")
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    del model.graph.output[:]
    model.graph.output.extend(known[o] for o in outputs)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def zoo_pool() -> bytes:
    """An image path: Pad, MaxPool, LeakyRelu, Clip, two Casts, a strided SAME_UPPER Conv, InstanceNormalization,
    AveragePool, Resize, DepthToSpace, Softmax over the last axis."""
    rng = np.random.default_rng(11)
    f32 = np.float32
    inits = [_const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)), _const("clip_lo", f32(-0.5)),
             _const("clip_hi", f32(0.75)), _const("conv.w", rng.standard_normal((8, 4, 3, 3)).astype(f32) * 0.2),
             _const("in.scale", np.ones(8, f32)), _const("in.bias", np.zeros(8, f32)),
             _const("scales", np.array([1, 1, 2, 2], f32))]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["padded"], name="pad", mode="reflect"),
        helper.make_node("MaxPool", ["padded"], ["pooled"], name="maxpool", kernel_shape=[3, 3], strides=[1, 1]),
        helper.make_node("LeakyRelu", ["pooled"], ["leaky"], name="leaky", alpha=0.1),
        helper.make_node("Clip", ["leaky", "clip_lo", "clip_hi"], ["clipped"], name="clip"),
        helper.make_node("Cast", ["clipped"], ["half"], name="to_half", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["half"], ["single"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Conv", ["single", "conv.w"], ["conv"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("InstanceNormalization", ["conv", "in.scale", "in.bias"], ["normed"], name="instnorm"),
        helper.make_node("AveragePool", ["normed"], ["avg"], name="avgpool", kernel_shape=[2, 2], strides=[1, 1],
                         pads=[0, 0, 1, 1], count_include_pad=1),
        helper.make_node("Resize", ["avg", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("DepthToSpace", ["up"], ["d2s"], name="d2s", blocksize=2),
        helper.make_node("Softmax", ["d2s"], ["y"], name="softmax_last", axis=-1),
    ]
    return _finish(nodes, [_vi("x", [2, 4, 8, 8])], ["y"], inits, "zoo_pool")


def zoo_seq() -> bytes:
    """A sequence path: LayerNormalization, MatMul, Transpose, Reshape, Slice, Concat, ReduceMean, Tile, Sub,
    Expand, Split, Sigmoid, Greater, Tanh, Where, Flatten."""
    rng = np.random.default_rng(12)
    f32 = np.float32
    inits = [_const("ln.scale", np.ones(16, f32)), _const("ln.bias", np.zeros(16, f32)),
             _const("w", rng.standard_normal((16, 12)).astype(f32) * 0.3), _const("shape", np.array([2, 60], np.int64)),
             _const("starts", np.array([4], np.int64)), _const("ends", np.array([40], np.int64)),
             _const("axes", np.array([1], np.int64)), _const("repeats", np.array([1, 2], np.int64)),
             _const("expand_to", np.array([3, 2, 96], np.int64)), _const("split", np.array([40, 56], np.int64)),
             _const("zero", f32(0.0))]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.scale", "ln.bias"], ["ln"], name="layernorm", axis=-1,
                         epsilon=1e-5),
        helper.make_node("MatMul", ["ln", "w"], ["mm"], name="matmul"),
        helper.make_node("Transpose", ["mm"], ["tr"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["tr", "shape"], ["flat"], name="reshape"),
        helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["sl"], name="slice"),
        helper.make_node("Concat", ["sl", "flat"], ["cat"], name="concat", axis=1),
        helper.make_node("ReduceMean", ["cat"], ["mean"], name="reducemean", axes=[1], keepdims=1),
        helper.make_node("Tile", ["mean", "repeats"], ["tiled"], name="tile"),
        helper.make_node("Sub", ["cat", "mean"], ["centered"], name="center"),
        helper.make_node("Expand", ["centered", "expand_to"], ["wide"], name="expand"),
        helper.make_node("Split", ["wide", "split"], ["left", "right"], name="split", axis=2),
        helper.make_node("Sigmoid", ["left"], ["gate"], name="sigmoid"),
        helper.make_node("Greater", ["right", "zero"], ["positive"], name="greater"),
        helper.make_node("Tanh", ["right"], ["squashed"], name="tanh"),
        helper.make_node("Where", ["positive", "squashed", "zero"], ["kept"], name="where"),
        helper.make_node("Flatten", ["kept"], ["y"], name="flatten", axis=1),
    ]
    return _finish(nodes, [_vi("x", [2, 5, 16])], ["y", "gate", "tiled"], inits, "zoo_seq")


def zoo_index() -> bytes:
    """Indexing with constant indices: Gather, GatherElements, GatherND, ScatterElements, TopK, ArgMax, CumSum,
    Trilu, Pow, Mul."""
    f32 = np.float32
    inits = [_const("idx", np.array([[0, 3], [5, 1]], np.int64)),
             _const("elem_idx", np.array([[0, 1, 2, 3, 0, 1]] * 4, np.int64)),
             _const("nd_idx", np.array([[0, 1], [3, 5]], np.int64)),
             _const("scatter_idx", np.array([[1, 0]] * 4, np.int64)), _const("updates", np.ones((4, 2), f32)),
             _const("k", np.array([3], np.int64)), _const("cum_axis", np.array(1, np.int64)),
             _const("two", f32(2.0))]
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g"], name="gather", axis=1),
        helper.make_node("GatherElements", ["x", "elem_idx"], ["ge"], name="gather_elements", axis=1),
        helper.make_node("GatherND", ["x", "nd_idx"], ["gnd"], name="gather_nd"),
        helper.make_node("ScatterElements", ["x", "scatter_idx", "updates"], ["sc"], name="scatter", axis=1),
        helper.make_node("TopK", ["sc", "k"], ["top", "top_i"], name="topk", axis=1),
        helper.make_node("ArgMax", ["ge"], ["am"], name="argmax", axis=1, keepdims=0),
        helper.make_node("CumSum", ["x", "cum_axis"], ["cs"], name="cumsum"),
        helper.make_node("Trilu", ["cs"], ["tri"], name="trilu", upper=0),
        helper.make_node("Pow", ["tri", "two"], ["sq"], name="pow"),
        helper.make_node("Mul", ["gnd", "two"], ["gnd2"], name="mul"),
    ]
    return _finish(nodes, [_vi("x", [4, 6])], ["g", "sq", "top", "am", "gnd2"], inits, "zoo_index")


ZOO = {"zoo_pool": zoo_pool, "zoo_seq": zoo_seq, "zoo_index": zoo_index}


def _example(name: str) -> bytes:
    with open(os.path.join(EXAMPLES, f"{name}.onnx"), "rb") as f:
        return f.read()


def build_seed(name: str, model: bytes) -> Seed:
    network, _ = network_from_onnx_bytes(model, QUIET)
    config = BuilderConfig(backend="cpu", warmup=0, iterations=1, runs_per_sample=1, algorithm_selector=FirstEligible(),
                           max_memory=1 << 30)
    result = Builder(QUIET).build(network, config)
    evidence = result.manifest.evidence
    assert evidence is not None
    # The build's clock readings are the only thing that differs between two builds: fixed here, so that bytes
    # mutations of the manifest land on the same bytes in every campaign.
    steady = evidence.model_copy(update={"started_at": "2026-01-01T00:00:00Z", "wall_seconds": 0.0,
                                         "phase_seconds": dict.fromkeys(evidence.phase_seconds, 0.0)})
    return Seed(name, model, result.engine, manifest_to_json(result.manifest.model_copy(update={"evidence": steady})))


@functools.cache
def seeds() -> tuple[Seed, ...]:
    """Every seed, in a fixed order: the two bundled examples, then the zoo."""
    models = {"mlp": _example("mlp"), "small_cnn": _example("small_cnn")}
    models.update({name: make() for name, make in ZOO.items()})
    return tuple(build_seed(name, model) for name, model in models.items())
