"""The bad-engine corpus: every file in ``tests/corpus/engine`` is refused with the typed error its defect
deserves, by the runtime and by every command that loads an engine (``inspect``, ``run``, ``bench``, ``verify``,
``compare``), never with another exception or a traceback. Also: a list of inputs instead of a mapping, and one
execution context shared by several threads (each call is refused or returns exactly its own outputs).

Regenerate the corpus with ``python -m tests.corpus.make_engine``; each file's defect is described there.
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest

from reprobuild.cli.main import main
from reprobuild.core.errors import FormatError, InputError, ReprobuildError, ResourceError, UsageError
from reprobuild.engine import Engine, Runtime
from tests.corpus import make_engine
from tests.helpers import EXAMPLES, race

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine")

#: file name (without .engine) -> (error class, message regex (searched, DOTALL), exit code)
TABLE: dict[str, tuple[type[ReprobuildError], str, int]] = {
    # attributes and shapes, through the op definitions
    "conv_strides_renamed": (FormatError, r"layer 'branch_a' \(op Conv\) has no attribute 'strides', which Conv "
                                          r"needs; it has \['strideS'\] instead", 4),
    "concat_axis_renamed": (FormatError, r"layer 'concat' \(op Concat\) has no attribute 'axis', which Concat needs; "
                                         r"it has \['axms'\] instead", 4),
    "conv_strides_wrong_type": (FormatError, r"layer 'branch_a' \(op Conv\): attribute 'strides' is str '1,1'; "
                                             r"Conv's 'strides' is a list of integers", 4),
    "conv_strides_wrong_rank": (FormatError, r"layer 'branch_a' \(op Conv\): its attributes .*'strides': \[1\]\} do "
                                             r"not fit its inputs .*IndexError", 4),
    "conv_strides_zero": (FormatError, r"layer 'branch_b' \(op Conv\): its attributes .* do not fit its inputs "
                                       r".*ZeroDivisionError", 4),
    "concat_axis_out_of_range": (FormatError, r"layer 'concat' \(op Concat\): its attributes \{'axis': 7\} do not "
                                              r"fit its inputs", 4),
    "concat_axis_negative": (FormatError, r"layer 'concat' \(op Concat\): .*axis -3 is not an axis of the rank-4 "
                                          r"inputs", 4),
    "gemm_unknown_attribute": (FormatError, r"layer 'fc3' \(op Gemm\) has attribute\(s\) \['transC'\], which Gemm "
                                            r"does not know", 4),
    "wrong_rank": (FormatError, r"layer 'stem' \(op FusedConv\): .*\[2, 3, 1024\] float32.*equal rank", 4),
    "conv_weight_wrong_rank": (FormatError, r"layer 'branch_a' \(op Conv\): .*\[8, 16\] float32.*equal rank", 4),
    "resize_sizes_contradict_input": (FormatError, r"layer 'resize' \(op Resize\): .* do not fit its inputs "
                                                   r"\(\[1, 3, 4, 4\] float32\): axis 1 is not resized "
                                                   r"\(axes \[2, 3\]\), so its output size is the input's 3, not 2", 4),
    "topk_axis_negative": (FormatError, r"layer 'topk' \(op TopK\): its attributes .*'axis': -1.* do not fit its "
                                        r"inputs \(\[4, 6\] float32\): axis -1 is not an axis of the rank-2 input "
                                        r"\(0 to 1\)", 4),
    "layer_output_shape_disagrees": (FormatError, r"layer 'fc1' \(op FusedGemm\) records outputs "
                                                  r"\['a1 \[8, 64\] float32'\].* computes \['\[8, 128\] float32'\]", 4),
    "unknown_op": (FormatError, r"layer 'softmax' \(op Frobnicate\): 'Frobnicate' cannot be the op of a layer", 4),
    # the attribute schemas the engine carries (format 6)
    "schema_missing_for_op": (FormatError, r"layer 'softmax' \(op Softmax\): the engine records no attribute schema "
                                           r"for op 'Softmax'", 4),
    "schema_for_unused_op": (FormatError, r"engine records an attribute schema for op 'Conv', which none of its "
                                          r"layers uses", 4),
    "schema_kind_unknown": (FormatError, r"does not match format version 6.*attribute_schemas\.Gemm\.attributes\."
                                         r"transA\.kind: Input should be 'int' or 'float'", 4),
    "schema_open_requires": (FormatError, r"attribute_schemas\.Softmax: Value error, an open attribute schema "
                                          r"\(closed false\) requires no attribute; this one requires "
                                          r"\['axis', 'coerce_2d'\]", 4),
    "schema_loosened": (FormatError, r"engine records an attribute schema for op 'Softmax' that is not this "
                                     r"reprobuild's \(attribute 'axis': the engine has \{'kind': 'int', 'required': "
                                     r"False\}", 4),
    # tactics
    "cuda_tactic_in_cpu_engine": (FormatError, r"layer 'softmax' \(op Softmax\) uses tactic reference\.cuda_Softmax "
                                               r"v\d+, which runs on the cuda backend, but the engine is for the cpu "
                                               r"backend", 4),
    "tactic_family_mismatch": (FormatError, r"layer 'fc3' \(op Gemm\) records tactic \w+ v\d+ in family 'conv'; "
                                            r"that tactic belongs to family 'gemm'", 4),
    # names and wiring
    "output_named_as_weight": (FormatError, r"tensor 'half' is both a weight and an activation tensor", 4),
    "activation_produced_twice": (FormatError, r"layer 'fc2' .* writes 'a1', which layer 'fc1' writes too", 4),
    "input_written_by_layer": (FormatError, r"layer 'softmax' .* writes 'input', which is a network input", 4),
    "layer_reads_undefined_tensor": (FormatError, r"layer 'fc3' .* reads tensor 'nowhere', which the engine does "
                                                  r"not define", 4),
    "activation_never_written": (FormatError, r"layer 'fc3' .* reads activation 'ghost', which is neither a network "
                                              r"input nor written by any layer", 4),
    "duplicate_layer_names": (FormatError, r"two layers named 'fc1'", 4),
    "layers_out_of_order": (FormatError, r"out of topological order: engine layer 'fc2' \(#0, op FusedGemm\) reads "
                                         r"'a1', which layer 'fc1' \(#1\) writes only later", 4),
    "binding_dtype_disagrees": (FormatError, r"output binding 'probs' is \[8, 10\] float16, but layer 'softmax' "
                                             r"writes it as \[8, 10\] float32", 4),
    "binding_shape_disagrees": (FormatError, r"output binding 'probs' is \[8, 5\] float32, but layer 'softmax' "
                                             r"writes it as \[8, 10\] float32", 4),
    "declared_shape_wrong_rank": (FormatError, r"engine input 'input' is \[8, 64\] float32, but its declared model "
                                               r"shape is \[8, 64, 1\]", 4),
    "declared_shape_static_dim_disagrees": (FormatError, r"engine input 'input' is \[8, 64\] float32, but its "
                                                         r"declared model shape is \[16, 64\]", 4),
    "declared_shape_of_unknown_input": (FormatError, r"declares a model shape for 'nowhere', which is not one of its "
                                                     r"run-time inputs", 4),
    # caps (the header's schema)
    "rank_65": (FormatError, r"tensor 'input' has 65 dimensions; an engine tensor has at most 16", 4),
    "dims_overflow_int64": (FormatError, r"tensor 'input' of shape \[2147483648, 2147483648, 2147483648\] \(float32\)"
                                         r" would take \d+ bytes; an engine tensor takes at most 4611686018427387903",
                            4),
    "dim_2_40": (FormatError, r"tensor 'input' has a dimension of 2\*\*40 or more", 4),
    "negative_dim": (FormatError, r"tensor 'input' has a negative dimension", 4),
    "memory_offset_out_of_range": (FormatError, r"memory plan places activation 'probs' \(320 bytes\) at offset "
                                                r"1099511627776, which is not inside the 7168-byte activation arena",
                                   4),
    # memory: a consistent engine that needs hundreds of TiB per context
    "terabyte_activations": (ResourceError, r"needs \d+ bytes \(448\.0 TiB\) of cpu memory: .* the cap is \d+ bytes "
                                            r".*the host's physical memory.*--max-memory", 13),
    # the embedded manifest
    "embedded_manifest_fake_tactic": (FormatError, r"embedded manifest disagrees with its header: layer 'fc3' tactic: "
                                                   r"the manifest records .*'cpu_fastest_ever'", 4),
    "embedded_manifest_other_attrs": (FormatError, r"embedded manifest disagrees with its header: layer 'fc3' "
                                                   r"attributes", 4),
    "embedded_manifest_missing_layer": (FormatError, r"embedded manifest disagrees with its header: layers: the "
                                                     r"manifest records \['fc1', 'fc2', 'fc3'\]", 4),
    "embedded_manifest_not_json": (FormatError, r"embedded manifest.*JSON", 4),
    # attributes and constants only the run read (each loaded, then failed with an untyped exception: exit 1)
    "softmax_axis_negative": (FormatError, r"layer 'softmax' \(op Softmax\): .*axis -1 is not an axis of the "
                                           r"rank-2 input", 4),
    "maxpool_dilations_deleted": (FormatError, r"layer 'pool' \(op MaxPool\) has no attribute 'dilations', which "
                                               r"MaxPool needs", 4),
    "leakyrelu_alpha_deleted": (FormatError, r"layer 'leaky' \(op LeakyRelu\) has no attribute 'alpha', which "
                                             r"LeakyRelu needs", 4),
    "clip_max_deleted": (FormatError, r"layer 'clip' \(op Clip\) has no attribute 'max', which Clip needs", 4),
    "cast_saturate_deleted": (FormatError, r"layer 'cast' \(op Cast\) has no attribute 'saturate', which Cast needs",
                              4),
    "pad_value_deleted": (FormatError, r"layer 'pad' \(op Pad\) has no attribute 'value', which Pad needs", 4),
    "layernorm_epsilon_deleted": (FormatError, r"layer 'norm' \(op LayerNormalization\) has no attribute 'epsilon', "
                                               r"which LayerNormalization needs", 4),
    "gather_index_out_of_range": (FormatError, r"layer 'gather' \(op Gather\): a constant input its run indexes "
                                               r"with is out of range: indices hold 9 .*outside \[-8, 8\)", 4),
}

#: ``reprobuild inspect`` only reads the file and allocates nothing, so an engine that merely needs more memory
#: than this machine has is shown (with its memory plan), not refused.
INSPECT_EXIT = {"terabyte_activations": 0}


def _path(name: str) -> str:
    return os.path.join(CORPUS, f"{name}.engine")


def _read(name: str) -> bytes:
    with open(_path(name), "rb") as f:
        return f.read()


def test_every_corpus_file_is_in_the_table() -> None:
    files = sorted(f[:-len(".engine")] for f in os.listdir(CORPUS) if f.endswith(".engine"))
    assert sorted(os.listdir(CORPUS)) == [f"{name}.engine" for name in files], "a corpus file not named *.engine"
    assert files == sorted(TABLE), "regenerate the corpus (python -m tests.corpus.make_engine) or update TABLE"
    assert sorted(make_engine.DEFECTS) == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_the_runtime_refuses_it_with_a_typed_error(name: str) -> None:
    error, pattern, _ = TABLE[name]
    data = _read(name)
    assert len(data) < 200_000
    with pytest.raises(ReprobuildError) as info:
        Runtime().deserialize_engine(data)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert re.search(pattern, str(info.value), re.DOTALL), str(info.value)


@pytest.mark.parametrize("command", ["inspect", "run", "bench", "verify", "compare"])
@pytest.mark.parametrize("name", sorted(TABLE))
def test_the_cli_exits_with_its_code_and_no_traceback(name: str, command: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, _, code = TABLE[name]
    if command == "inspect":
        code = INSPECT_EXIT.get(name, code)
    extra = {"run": ["--seed", "0"], "verify": ["--runs", "1"], "bench": ["--iterations", "1", "--warmup", "0"],
             "compare": [os.path.join(EXAMPLES, "mlp.onnx")]}.get(command, [])
    args = [command, _path(name), *extra]
    assert main(args) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    if code:
        assert f"reprobuild {command}: error: " in err


@pytest.fixture(scope="module")
def mlp() -> Engine:
    """The valid engine the corpus's mlp files are made from, taken apart and packed again by the corpus tool:
    it loads and runs, so each bad file's only problem is its defect."""
    return Runtime().deserialize_engine(make_engine.Engine(make_engine.build("mlp.onnx")).pack())


def test_the_corpus_tool_itself_writes_valid_engines(mlp: Engine) -> None:
    cnn = Runtime().deserialize_engine(make_engine.Engine(make_engine.build("small_cnn.onnx")).pack())
    ops = Runtime().deserialize_engine(make_engine.Engine(make_engine.build_ops()).pack())
    for engine in (mlp, cnn, ops):
        feeds = {b.name: np.zeros(b.shape, b.dtype) for b in engine.inputs if b.value is None}
        outputs = engine.create_execution_context().execute(feeds)
        assert [b.name for b in engine.outputs] == list(outputs)


def test_a_generous_memory_cap_is_honoured_and_a_tight_one_refused() -> None:
    data = make_engine.Engine(make_engine.build("mlp.onnx")).pack()
    engine = Runtime(max_memory=1 << 40).deserialize_engine(data)
    need = engine.weights_bytes + engine.device_memory_size
    with pytest.raises(ResourceError, match=rf"needs {need} bytes .* the cap is {need - 1} bytes .*max_memory"):
        Runtime(max_memory=need - 1).deserialize_engine(data)
    capped = Runtime(max_memory=need).deserialize_engine(data)
    first = capped.create_execution_context()  # weights + one context: fits
    with pytest.raises(ResourceError, match="each of 2 execution contexts"):
        capped.create_execution_context()
    del first
    capped.create_execution_context()  # the first one's memory is free again
    with pytest.raises(UsageError, match="positive number of bytes"):
        Runtime(max_memory=0)


def test_execute_with_a_list_is_an_input_error(mlp: Engine) -> None:
    x = np.zeros((8, 64), np.float32)
    with pytest.raises(InputError, match=r"inputs are a mapping from input name to array, such as \{'input': "
                                         r"array\}; got a list\. This engine's inputs: input \[8, 64\] float32"):
        mlp.create_execution_context().execute([x])  # type: ignore[arg-type]


def test_threads_sharing_one_context_are_refused_never_raced(mlp: Engine) -> None:
    """Several threads run one context with inputs of their own: each call either is refused (UsageError) or
    returns exactly the outputs a single-threaded run on another context gives for its inputs. (Before execute
    held the context through the copy of its outputs, about 1 call in 500 here returned another thread's.)"""
    threads, wanted = 4, 1500
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((8, 64)).astype(np.float32)} for _ in range(threads)]
    reference = mlp.create_execution_context()
    expected = [reference.execute(f)["probs"].tobytes() for f in feeds]
    assert len(set(expected)) == threads
    shared = mlp.create_execution_context()
    done = [0] * threads
    refused = [0] * threads
    wrong: list[str] = []
    deadline = time.monotonic() + 8.0  # a slow machine makes fewer calls, never a longer test

    def work(i: int) -> None:
        while done[i] < wanted and time.monotonic() < deadline:
            try:
                if done[i] % 10 == 9:
                    got = shared.execute_traced(feeds[i])[0]["probs"].tobytes()
                else:
                    got = shared.execute(feeds[i])["probs"].tobytes()
            except UsageError:
                refused[i] += 1
                time.sleep(0)  # let the thread that holds the context go on
                continue
            except Exception as exc:  # anything else fails the test
                wrong.append(f"thread {i}: {type(exc).__name__}: {exc}")
                return
            if got != expected[i]:
                wrong.append(f"thread {i}, call {done[i]}: outputs of another thread's inputs")
            done[i] += 1

    race(work, threads)
    assert not wrong, wrong[:5]
    assert all(n > 0 for n in done), (done, refused)


def _gather_engine() -> Engine:
    """y = Gather(x [5, 3], i [2]) along axis 0, with the indices a run-time input."""
    import onnx
    from onnx import helper

    from reprobuild.builder import Builder, BuilderConfig
    from reprobuild.core.logger import Logger, Severity
    from reprobuild.frontend import network_from_onnx_bytes

    graph = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=0)], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [5, 3]),
                               helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    quiet = Logger(Severity.ERROR)
    network, _ = network_from_onnx_bytes(model.SerializeToString(), quiet)
    built = Builder(quiet).build(network, BuilderConfig(backend="cpu", warmup=0, iterations=1))
    return Runtime(quiet).deserialize_engine(built.engine)


def test_run_time_indices_out_of_range_are_an_input_error() -> None:
    """Indices the loader cannot see (a network input): on the CPU an index out of range was an untyped
    IndexError; it is an InputError naming the layer."""
    context = _gather_engine().create_execution_context()
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    assert context.execute({"x": x, "i": np.array([4, -5])})["y"].tolist() == [x[4].tolist(), x[0].tolist()]
    with pytest.raises(InputError, match=r"engine layer 'pick' \(op Gather, tactic \S+ v\d+\) was given indices out "
                                         r"of range at run time \(index 9 is out of bounds"):
        context.execute({"x": x, "i": np.array([0, 9])})


def test_any_other_failure_of_a_running_layer_is_typed_and_names_it(mlp: Engine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line behind the loader: whatever a CPU layer raises while it runs is a FormatError naming the layer
    (chained to the original, which --debug shows), never an untyped exception."""
    context = mlp.create_execution_context()

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("something the loader did not foresee")

    monkeypatch.setattr(np, "exp", broken)
    with pytest.raises(FormatError, match=r"engine layer 'softmax' \(op Softmax, tactic \S+ v\d+\) failed while it "
                                          r"ran: ValueError: something the loader did not foresee") as info:
        context.execute({"input": np.zeros((8, 64), np.float32)})
    assert isinstance(info.value.__cause__, ValueError)
