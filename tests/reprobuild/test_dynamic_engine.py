"""Dynamic engines: optimization profiles in the builder, one engine for a range of shapes, the runtime's profile
and shape API. A BERT export with dynamic batch and sequence and a CNN with a dynamic batch are each built once and
run at several shapes against onnxruntime; a shape outside the profile is a typed error; the engine file's dynamic
section is validated on load."""

from __future__ import annotations

import dataclasses
import os

import msgpack
import numpy as np
import onnx
import pytest

from reprobuild.builder import Builder, BuilderConfig, BuildResult
from reprobuild.core.errors import BuildError, FormatError, InputError, UsageError
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from reprobuild.engine.dynamic import ProfileShapeError
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ir import OptimizationProfile
from tests.helpers import BACKENDS, CUDA_SKIP, REPO, assert_close, ort_run, tactic_tolerance
from tests.reprobuild.test_dynamic_shapes import _dynamic_cnn, _text_feeds

QUIET = Logger(Severity.ERROR)
BERT = os.path.join(REPO, "tests", "data", "dynamic", "bert_dynamic.onnx")


def _bert() -> onnx.ModelProto:
    return onnx.load(BERT)


def text_profile(low: tuple[int, int], opt: tuple[int, int], high: tuple[int, int]) -> OptimizationProfile:
    profile = OptimizationProfile()
    for name in ("input_ids", "attention_mask"):
        profile.set_shape(name, low, opt, high)
    return profile


def build(model: onnx.ModelProto, profiles: list[OptimizationProfile], backend: str = "cpu") -> BuildResult:
    network, _ = network_from_onnx_bytes(model.SerializeToString(), QUIET, profiles=profiles)
    config = BuilderConfig(backend=backend)
    for profile in profiles:
        config.add_optimization_profile(profile)
    return Builder(QUIET).build(network, config)


@pytest.fixture(scope="module")
def bert_engine() -> BuildResult:
    return build(_bert(), [text_profile((1, 2), (2, 16), (8, 32)), text_profile((1, 33), (4, 48), (16, 64))])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bert_one_engine_runs_every_shape_of_two_profiles_against_onnxruntime(backend):
    result = build(_bert(), [text_profile((1, 2), (2, 16), (8, 32)), text_profile((1, 33), (4, 48), (16, 64))],
                   backend)
    engine = Runtime(QUIET).deserialize_engine(result.engine)
    assert engine.is_dynamic and engine.num_optimization_profiles == 2
    assert engine.get_tensor_profile_shape("input_ids", 1) == ((1, 33), (4, 48), (16, 64))
    assert engine.symbolic_shape("last_hidden_state")[2] == 64
    context = engine.create_execution_context()
    model, rng = _bert(), np.random.default_rng(31)
    for profile, batch, seq in ((0, 1, 16), (0, 3, 7), (0, 8, 32), (1, 2, 64), (1, 5, 33), (0, 1, 2)):
        context.set_optimization_profile(profile)
        feeds = _text_feeds(rng, batch, seq)
        for name, value in feeds.items():
            context.set_input_shape(name, value.shape)
        assert context.get_tensor_shape("last_hidden_state") == (batch, seq, 64)
        (out,) = context.execute(feeds).values()
        (ref,) = ort_run(model, feeds)
        assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_a_shape_is_computed_as_a_fixed_shape_engine_of_it_computes(bert_engine):
    """Bitwise: the dynamic engine at (3, 7) and an engine built for exactly (3, 7) with the same tactics."""
    engine = Runtime(QUIET).deserialize_engine(bert_engine.engine)
    feeds = _text_feeds(np.random.default_rng(37), 3, 7)
    (dynamic_out,) = engine.create_execution_context().execute(feeds).values()
    at_shape = engine.at_shape(0, {"batch": 3, "sequence": 7})
    (static_out,) = at_shape.create_execution_context().execute(feeds).values()
    assert dynamic_out.tobytes() == static_out.tobytes()
    assert not at_shape.is_dynamic and at_shape.inputs[0].shape == (3, 7)
    assert engine.at_shape(0, {"batch": 3, "sequence": 7}) is at_shape  # prepared once, kept


def test_runs_are_bitwise_repeatable_and_do_not_depend_on_the_order_of_shapes(bert_engine):
    engine = Runtime(QUIET).deserialize_engine(bert_engine.engine)
    rng = np.random.default_rng(41)
    cases = [_text_feeds(rng, b, s) for b, s in ((2, 9), (1, 20), (4, 3))]
    first = [next(iter(engine.create_execution_context().execute(f).values())).tobytes() for f in cases]
    context = engine.create_execution_context()
    again = [next(iter(context.execute(f).values())).tobytes() for f in reversed(cases)]
    assert again == list(reversed(first))


def test_the_manifest_and_the_engine_record_every_profile(bert_engine):
    dynamic = bert_engine.manifest.pinned.dynamic
    assert dynamic is not None
    assert dynamic.symbols == {"batch": [1, 16], "sequence": [2, 64]}
    assert [p.inputs["input_ids"] for p in dynamic.profiles] == [[[1, 2], [2, 16], [8, 32]],
                                                                 [[1, 33], [4, 48], [16, 64]]]
    layers = bert_engine.manifest.pinned.layers
    assert all(len(p.tactics) == len(layers) for p in dynamic.profiles)
    assert [t.model_dump() for t in dynamic.profiles[0].tactics] == [layer.tactic.model_dump() for layer in layers]
    assert dynamic.shapes["input_ids"] == ["batch", "sequence"]
    assert dynamic.shapes["last_hidden_state"] == ["batch", "sequence", 64]
    # The pinned record of a fixed-shape engine has no dynamic key at all (its bytes are as before).
    static = Builder(QUIET).build(network_from_onnx_bytes(
        _bert().SerializeToString(), QUIET, input_shapes={"input_ids": (2, 5), "attention_mask": (2, 5)})[0],
        BuilderConfig(backend="cpu"))
    assert static.manifest.pinned.dynamic is None
    assert b'"dynamic"' not in static.engine[:4096] and "dynamic" not in static.manifest.pinned.model_dump(mode="json")


def test_a_shape_outside_the_profile_is_a_typed_error_naming_the_input_axis_and_range(bert_engine):
    context = Runtime(QUIET).deserialize_engine(bert_engine.engine).create_execution_context()
    with pytest.raises(ProfileShapeError, match=r"'input_ids' axis 1 \(sequence\) is 40, outside optimization "
                                                r"profile 0's range \[2, 32\]"):
        context.set_input_shape("input_ids", (1, 40))
    assert issubclass(ProfileShapeError, InputError) and ProfileShapeError.exit_code == 7
    with pytest.raises(ProfileShapeError, match=r"axis 0 \(batch\) is 9, outside"):
        context.execute(_text_feeds(np.random.default_rng(1), 9, 4))
    context.set_optimization_profile(1)
    with pytest.raises(ProfileShapeError, match=r"axis 1 \(sequence\) is 4, outside optimization profile 1"):
        context.execute(_text_feeds(np.random.default_rng(1), 2, 4))
    ids = np.zeros((2, 40), np.int64)
    with pytest.raises(ProfileShapeError, match=r"'input_ids' axis 0 \(batch\) is 2, but .*'attention_mask' axis 0"):
        context.execute({"attention_mask": np.ones((3, 40), np.int64), "input_ids": ids})
    with pytest.raises(UsageError, match="profile 2 does not exist"):
        context.set_optimization_profile(2)


def test_building_a_dynamic_network_without_a_profile_or_outside_its_parse_range_is_refused():
    profile = text_profile((1, 2), (2, 16), (8, 32))
    network, _ = network_from_onnx_bytes(_bert().SerializeToString(), QUIET, profiles=[profile])
    with pytest.raises(BuildError, match="give at least one optimization profile"):
        Builder(QUIET).build(network, BuilderConfig(backend="cpu"))
    config = BuilderConfig(backend="cpu")
    config.add_optimization_profile(text_profile((1, 2), (2, 16), (8, 64)))
    with pytest.raises(BuildError, match=r"'sequence' the range \[2, 64\], but the network was parsed for \[2, 32\]"):
        Builder(QUIET).build(network, config)


def test_profile_shapes_are_checked():
    profile = OptimizationProfile()
    with pytest.raises(UsageError, match="0 <= min <= opt <= max"):
        profile.set_shape("input_ids", (1, 8), (1, 4), (1, 16))
    with pytest.raises(UsageError, match="ranks"):
        profile.set_shape("input_ids", (1, 8), (1, 8, 1), (1, 16))
    data = _bert().SerializeToString()
    half = OptimizationProfile()
    half.set_shape("input_ids", (1, 2), (2, 8), (4, 16))
    with pytest.raises(UsageError, match=r"gives no shape for \['attention_mask'\]"):
        network_from_onnx_bytes(data, QUIET, profiles=[half])
    clash = text_profile((1, 2), (2, 8), (4, 16))
    clash.set_shape("attention_mask", (1, 2), (3, 8), (4, 16))
    with pytest.raises(UsageError, match="both the dimension 'batch'"):
        network_from_onnx_bytes(data, QUIET, profiles=[clash])


def test_cnn_with_a_dynamic_batch_in_one_engine():
    model = _dynamic_cnn()
    profile = OptimizationProfile()
    profile.set_shape("x", (1, 3, 8, 8), (8, 3, 8, 8), (64, 3, 8, 8))
    result = build(model, [profile])
    context = Runtime(QUIET).deserialize_engine(result.engine).create_execution_context()
    rng = np.random.default_rng(43)
    for batch in (1, 3, 8, 64):
        feeds = {"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)}
        (out,) = context.execute(feeds).values()
        (ref,) = ort_run(model, feeds)
        assert out.shape == (batch, 10)
        assert_close(out, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ProfileShapeError, match=r"'x' axis 2 is 9; that axis is static, 8"):
        context.execute({"x": np.zeros((1, 3, 9, 8), np.float32)})


def _rewrite_header(engine: bytes, change) -> bytes:
    """The engine with its header edited and the trailer recomputed (a crafted file that passes the checksum)."""
    import hashlib
    import struct

    from reprobuild.engine import format as fmt

    magic, version, length = struct.unpack_from("<8sIQ", engine)
    header = msgpack.unpackb(engine[20:20 + length], raw=False)
    change(header)
    packed = msgpack.packb(fmt._canonical(header), use_bin_type=True)
    start = fmt._align(20 + length)
    body = engine[start:-32]
    out = struct.pack("<8sIQ", magic, version, len(packed)) + packed
    out += b"\0" * (fmt._align(len(out)) - len(out)) + body
    return out + hashlib.sha256(out).digest()


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["dynamic"][0]["shapes"].update({"input_ids": ["batch", "sequence*batch"]}), "canonical form"),
    (lambda h: h["dynamic"][0]["shapes"].update({"input_ids": ["batch", "tokens"]}), "does not declare"),
    (lambda h: h["dynamic"][0]["profiles"][0]["inputs"]["input_ids"].__setitem__(0, [1, 1]), "not ordered"),
    (lambda h: h["dynamic"][0]["profiles"][1]["tactics"].pop(), "tactics for"),
    (lambda h: h["dynamic"][0]["symbols"].update({"batch": [0, 16]}), "range"),
    (lambda h: h["dynamic"][0]["shapes"].update({"last_hidden_state": ["batch", "sequence", 65]}),
     "at profile 0's opt"),
])
def test_a_crafted_dynamic_section_is_a_format_error(bert_engine, edit, message):
    data = _rewrite_header(bert_engine.engine, edit)
    with pytest.raises(FormatError, match=message):
        Runtime(QUIET).deserialize_engine(data)


def test_the_untouched_engine_survives_the_rewrite_helper(bert_engine):
    assert _rewrite_header(bert_engine.engine, lambda h: None) == bert_engine.engine
    assert dataclasses.is_dataclass(Runtime(QUIET).deserialize_engine(bert_engine.engine).header)


def test_replaying_the_manifest_gives_the_same_engine_bytes(bert_engine):
    from reprobuild.builder.replay import ReplaySelector, profiles_from_manifest

    profiles = profiles_from_manifest(bert_engine.manifest)
    assert [p.get_shape("input_ids") for p in profiles] == [((1, 2), (2, 16), (8, 32)), ((1, 33), (4, 48), (16, 64))]
    network, _ = network_from_onnx_bytes(_bert().SerializeToString(), QUIET, profiles=profiles)
    config = BuilderConfig(backend="cpu", algorithm_selector=ReplaySelector(bert_engine.manifest, logger=QUIET))
    for profile in profiles:
        config.add_optimization_profile(profile)
    replayed = Builder(QUIET).build(network, config)
    assert replayed.engine == bert_engine.engine
    assert replayed.manifest.pinned == bert_engine.manifest.pinned


def test_a_replay_that_cannot_honour_a_profiles_tactic_fails_closed(bert_engine):
    from reprobuild.builder.replay import ReplaySelector, profiles_from_manifest
    from reprobuild.core.errors import ReplayMismatchError
    from reprobuild.manifest import models as m

    manifest = bert_engine.manifest
    dynamic = manifest.pinned.dynamic
    tactics = list(dynamic.profiles[1].tactics)
    tactics[0] = m.TacticRef(**{**tactics[0].model_dump(), "name": "cpu_no_such_tactic"})
    edited = manifest.model_copy(update={"pinned": manifest.pinned.model_copy(update={"dynamic": dynamic.model_copy(
        update={"profiles": [dynamic.profiles[0], dynamic.profiles[1].model_copy(update={"tactics": tactics})]})})})
    profiles = profiles_from_manifest(edited)
    network, _ = network_from_onnx_bytes(_bert().SerializeToString(), QUIET, profiles=profiles)
    config = BuilderConfig(backend="cpu", algorithm_selector=ReplaySelector(edited, logger=QUIET))
    for profile in profiles:
        config.add_optimization_profile(profile)
    with pytest.raises(ReplayMismatchError, match=r"profile 1: layer .* records tactic .*cpu_no_such_tactic"):
        Builder(QUIET).build(network, config)


def test_refit_keeps_the_profiles_and_their_tactics(bert_engine):
    from reprobuild.builder.refit import Refitter

    same = Refitter(bert_engine.engine, QUIET).refit_from_model(_bert().SerializeToString())
    assert same.engine == bert_engine.engine  # the same weights: the same engine, every profile kept
    refitter = Refitter(bert_engine.engine, QUIET)
    for name in refitter.get_all_weights():
        refitter.set_named_weights(name, refitter.get_named_weights(name))
    kept = refitter.refit()  # from the engine's own symbolic network (no model file: the model record differs)
    assert kept.manifest.pinned.dynamic == bert_engine.manifest.pinned.dynamic
    assert kept.manifest.pinned.layers == bert_engine.manifest.pinned.layers
    feeds = _text_feeds(np.random.default_rng(53), 5, 40)
    outs = []
    for engine in (kept.engine, bert_engine.engine):
        context = Runtime(QUIET).deserialize_engine(engine).create_execution_context()
        context.set_optimization_profile(1)
        outs.append(next(iter(context.execute(feeds).values())).tobytes())
    assert outs[0] == outs[1]
    model = _bert()
    for init in model.graph.initializer:  # new weights, same graph
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2:
            values = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array((values * 0.5).astype(np.float32), init.name))
    refitted = Refitter(bert_engine.engine, QUIET).refit_from_model(model.SerializeToString())
    assert refitted.manifest.pinned.dynamic is not None
    assert [p.tactics for p in refitted.manifest.pinned.dynamic.profiles] == \
        [p.tactics for p in bert_engine.manifest.pinned.dynamic.profiles]
    context = Runtime(QUIET).deserialize_engine(refitted.engine).create_execution_context()
    context.set_optimization_profile(1)
    feeds = _text_feeds(np.random.default_rng(47), 3, 40)
    (out,) = context.execute(feeds).values()
    (ref,) = ort_run(model, feeds)
    assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_one_scratch_buffer_sized_for_the_profiles_max_serves_every_shape(bert_engine):
    engine = Runtime(QUIET).deserialize_engine(bert_engine.engine)
    context = engine.create_execution_context()
    assert context.device_memory_size == 0  # allocated on the first run
    rng = np.random.default_rng(59)
    context.execute(_text_feeds(rng, 1, 4))
    at_max = engine.at_shape(0, {"batch": 8, "sequence": 32}).device_memory_size
    assert context.device_memory_size == at_max
    for batch, seq in ((8, 32), (2, 20), (5, 3)):
        context.execute(_text_feeds(rng, batch, seq))
    assert context.device_memory_size == at_max  # no shape of the profile needed more
    buffers = {id(c.device_memory.base) for c in context._contexts.values()}
    assert len(context._contexts) == 4 and len(buffers) == 1  # every shape's context on the one buffer


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_on_cuda_each_shape_runs_as_its_own_cuda_graph_with_the_bits_of_a_fixed_engine(precision):
    """One graph per shape, captured on the shape's first run and replayed after; every shape's bits are those of
    the engine at that shape run eagerly, and a sample's bits do not depend on its batch (verify --shapes)."""
    from reprobuild.verify.shapes import shape_invariance

    network, _ = network_from_onnx_bytes(_bert().SerializeToString(), QUIET,
                                         profiles=[text_profile((1, 2), (4, 16), (8, 32))])
    config = BuilderConfig(backend="cuda", precision=precision)
    config.add_optimization_profile(text_profile((1, 2), (4, 16), (8, 32)))
    result = Builder(QUIET).build(network, config)
    engine = Runtime(QUIET).deserialize_engine(result.engine)
    context = engine.create_execution_context()
    rng = np.random.default_rng(61)
    cases = [_text_feeds(rng, b, s) for b, s in ((1, 16), (3, 7), (8, 32), (2, 2))]
    for feeds in cases * 2:  # the second pass replays each shape's captured graph
        (graph_out,) = context.execute(feeds).values()
        shaped = context._current.engine
        assert context._current.cuda_graph and context._current._graph is not None
        (eager_out,) = shaped.create_execution_context(cuda_graph=False).execute(feeds).values()
        assert graph_out.tobytes() == eager_out.tobytes()
        (ref,) = ort_run(_bert(), feeds)
        assert_close(graph_out, ref, **tactic_tolerance(None, "float16" if precision == "fp16" else "float32"))
    assert len(context._contexts) == 4
    checks = shape_invariance(engine, 0, [("batch", (1, 3, 8)), ("sequence", (7, 32))], seed=3)
    assert all(c.identical for c in checks), [c.detail for c in checks if not c.identical]


def test_profile_timing_times_every_candidate_at_the_shapes_asked_for(monkeypatch):
    """--profile-timing opt,max: each candidate is timed at the profile's opt and max shapes, chosen by the sum."""
    from reprobuild.builder import builder as builder_module

    timed_at: list[tuple[int, ...]] = []
    real = builder_module.time_candidates

    def spy(spec, candidates, *args, **kwargs):
        timed_at.append(tuple(spec.outputs[0].shape))
        return real(spec, candidates, *args, **kwargs)

    monkeypatch.setattr(builder_module, "time_candidates", spy)
    model = _dynamic_cnn()
    profile = OptimizationProfile()
    profile.set_shape("x", (1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    network, _ = network_from_onnx_bytes(model.SerializeToString(), QUIET, profiles=[profile])
    config = BuilderConfig(backend="cpu", profile_timing=("opt", "max"))
    config.add_optimization_profile(profile)
    result = Builder(QUIET).build(network, config)
    first_dims = {shape[0] for shape in timed_at}
    assert first_dims == {4, 16}  # every layer at opt (batch 4) and at max (batch 16), never at min
    assert len(timed_at) == 2 * len(result.manifest.pinned.layers)
    assert result.manifest.pinned.dynamic.timing == ["opt", "max"]
    bad = BuilderConfig(backend="cpu", profile_timing=("max",))
    bad.add_optimization_profile(profile)
    with pytest.raises(UsageError, match="profile_timing"):
        Builder(QUIET).build(network, bad)


def test_a_dynamic_context_is_for_one_thread_at_a_time(bert_engine):
    """Every shape's context shares the one scratch buffer: another thread is refused while one holds the context
    (enqueue holds it until to_host), never raced."""
    import threading

    context = Runtime(QUIET).deserialize_engine(bert_engine.engine).create_execution_context()
    feeds = _text_feeds(np.random.default_rng(67), 2, 9)
    outputs = context.enqueue(feeds)
    refused: list[BaseException] = []

    def other() -> None:
        try:
            context.execute(_text_feeds(np.random.default_rng(71), 3, 4))
        except UsageError as exc:
            refused.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert refused and "not free" in str(refused[0])
    (host,) = context.to_host(outputs).values()  # ends this thread's hold
    (again,) = context.execute(feeds).values()
    assert host.tobytes() == again.tobytes()
