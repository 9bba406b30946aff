"""The ONNX frontend: typed, teaching errors for what it does not support, and faithful normalization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from reprobuild.core.errors import DynamicShapeError, ModelError, UnsupportedOpError, UsageError
from reprobuild.frontend import network_from_onnx_bytes
from tests.helpers import make_model


def parse(model: onnx.ModelProto, **kwargs: object):  # type: ignore[no-untyped-def]
    return network_from_onnx_bytes(model.SerializeToString(), **kwargs)  # type: ignore[arg-type]


def test_unsupported_op_names_node_op_and_supported_list() -> None:
    model = make_model([helper.make_node("Unique", ["x"], ["y"], name="act")], {"x": (2, 3)}, ["y"])
    with pytest.raises(UnsupportedOpError) as err:
        parse(model)
    message = str(err.value)
    assert "'act'" in message and "Unique" in message and "Conv" in message and "Softmax" in message


def test_unsupported_attribute_value_names_node() -> None:
    model = make_model([helper.make_node("LpNormalization", ["x"], ["y"], name="mp", p=3)], {"x": (1, 4)}, ["y"])
    with pytest.raises(UnsupportedOpError, match=r"'mp' \(op LpNormalization\).*p"):
        parse(model)


def test_unknown_attribute_is_refused() -> None:
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    node.attribute.append(helper.make_attribute("alpha", 0.1))
    model = onnx.ModelProto()
    model.CopyFrom(make_model([helper.make_node("Relu", ["x"], ["y"], name="r")], {"x": (2,)}, ["y"]))
    model.graph.node[0].CopyFrom(node)
    with pytest.raises(ModelError) as err:  # the ONNX checker knows Relu has no alpha
        network_from_onnx_bytes(model.SerializeToString())
    assert "alpha" in str(err.value) and "Relu" in str(err.value)


def test_valid_onnx_attribute_we_do_not_implement_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.ops import get_op

    monkeypatch.setattr(type(get_op("Flatten")), "attributes", {})
    model = make_model([helper.make_node("Flatten", ["x"], ["y"], name="f", axis=1)], {"x": (2, 3)}, ["y"])
    with pytest.raises(UnsupportedOpError, match=r"'f' \(op Flatten\): attribute 'axis' is not one Flatten version "
                                                 r"13 has; it has: none"):
        parse(model)


def _dynamic_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dynamic_dimension_error_says_how_to_fix_it() -> None:
    """A concrete --input-shape from the model's own dims, each dynamic one set to 1 as an example (issue 11: it
    was the literal placeholder Nx3, which --input-shape refuses)."""
    with pytest.raises(DynamicShapeError, match=r"'x'.*'batch' at axis 0.*--input-shape x=1x3 \(1 for 'batch'") as exc:
        parse(_dynamic_model())
    assert "=N" not in str(exc.value)


def test_input_shape_override_fixes_dynamic_dimension() -> None:
    network, _ = parse(_dynamic_model(), input_shapes={"x": (4, 3)})
    assert network.inputs[0].shape == (4, 3)
    assert network.outputs[0].shape == (4, 3)


def test_input_shape_override_must_fit_and_name_an_input() -> None:
    with pytest.raises(UsageError, match="does not fit"):
        parse(_dynamic_model(), input_shapes={"x": (4, 5)})
    with pytest.raises(UsageError, match="not a network input"):
        parse(_dynamic_model(), input_shapes={"nope": (1,)})


def test_runtime_weights_stay_inputs_of_the_layer() -> None:
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], {"x": (1, 2, 5, 5), "w": (3, 2, 3, 3)},
                       ["y"])
    network, _ = parse(model)
    assert [t.name for t in network.inputs] == ["x", "w"] and network.layers[0].inputs == ("x", "w")


def test_not_onnx_and_checker_failures_are_model_errors() -> None:
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        network_from_onnx_bytes(b"\xff\x00garbage" * 10)
    broken = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (2,)}, ["y"])
    broken.graph.node[0].input[0] = "missing"
    with pytest.raises(ModelError):
        parse(broken)


def test_a_dtype_the_op_does_not_take_names_node_op_and_dtype() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError, match=r"node 'r' \(op Relu\): input 0 has dtype uint8; Relu supports "):
        parse(model)


def test_constants_are_folded_and_dropout_disappears() -> None:
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["filled"], value=helper.make_tensor("v", 1, [1], [2.0])),
        helper.make_node("Relu", ["filled"], ["filled_relu"]),
        helper.make_node("Mul", ["x", "filled_relu"], ["scaled"]),
        helper.make_node("Dropout", ["scaled"], ["y"], name="drop"),
    ]
    model = make_model(nodes, {"x": (2, 3)}, ["y"], {"shape": np.array([2, 3], dtype=np.int64)})
    network, _ = parse(model)
    assert [layer.op for layer in network.layers] == ["Mul", "Identity"]
    from reprobuild.passes import DEFAULT_PASSES, run_passes

    simplified = run_passes(network, DEFAULT_PASSES)
    assert [layer.op for layer in simplified.layers] == ["Mul"]
    assert simplified.layers[0].outputs == ("y",), "the Mul should now write the network output itself"


def test_same_upper_padding_is_resolved_to_explicit_pads() -> None:
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
                       {"x": (1, 1, 7, 8)}, ["y"], {"w": np.ones((1, 1, 4, 3), dtype=np.float32)})
    network, _ = parse(model)
    layer = network.layers[0]
    assert layer.attr("pads") == (1, 0, 2, 1)
    assert network.outputs[0].shape == (1, 1, 4, 4)


def test_unnamed_nodes_get_stable_unique_names() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    network, _ = parse(make_model(nodes, {"x": (2,)}, ["y"]))
    assert [layer.name for layer in network.layers] == ["Relu_0", "Relu_1"]


def test_models_older_than_opset_7_are_upgraded_and_the_manifest_says_so() -> None:
    from reprobuild.builder import Builder, BuilderConfig

    nodes = [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Relu", ["s"], ["z"])]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3])
                                             for n in ("x", "y")],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    network, info = parse(model)
    assert info.upgraded_from_opset == 6 and info.opset == 7
    manifest = Builder().build(network, BuilderConfig(backend="cpu", iterations=1)).manifest
    assert manifest.pinned.model.upgraded_from_opset == 6


def test_every_unsupported_node_is_listed_at_once_and_other_domains_are_named() -> None:
    nodes = [helper.make_node("Unique", ["x"], ["a"], name="u1"), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Unique", ["b"], ["c"], name="u2"),
             helper.make_node("LabelEncoder", ["c"], ["y"], name="enc", domain="ai.onnx.ml")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    from reprobuild.frontend import UnsupportedNodesError

    with pytest.raises(UnsupportedNodesError) as err:
        network_from_onnx_bytes(model.SerializeToString())
    assert [n for n, _, _ in err.value.nodes] == ["u1", "u2", "enc"]
    message = str(err.value)
    assert "3 node(s)" in message and "'ai.onnx.ml' (ONNX-ML" in message and "Unique x2" in message


# --- external data (issue 20, finding 5) ---------------------------------------------------------------------------

SECRET = b"TOPSECRET-do-not-embed"


def _external(name: str, location: str, size: int = len(SECRET)) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[size], data_location=TensorProto.EXTERNAL)
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _constant_model(location: str) -> onnx.ModelProto:
    """A model whose one node is a Constant that keeps its value in the external file ``location``."""
    node = helper.make_node("Constant", [], ["y"], name="leak", value=_external("c", location))
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.UINT8,
                                                                             [len(SECRET)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every external data file onnx is asked to read (none may be)."""
    import onnx.external_data_helper as helper_module

    asked: list[str] = []

    def record(tensor: TensorProto, base_dir: str, *args: object) -> None:
        asked.append(f"{base_dir}:{tensor.name}")
        raise AssertionError("an external data file was read")

    readers = [name for name in ("_read_external_data_bytes", "load_external_data_for_tensor")
               if hasattr(helper_module, name)]
    assert readers, "onnx's external data reader moved: update this fixture"
    for name in readers:
        monkeypatch.setattr(helper_module, name, record)
    return asked


@pytest.mark.parametrize("where", ["cwd", "parent", "absolute", "symlink"])
def test_a_constant_with_external_data_is_refused_and_nothing_is_read(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    from reprobuild.cli.main import main
    from reprobuild.frontend import network_from_onnx_path

    models, cwd = tmp_path / "models", tmp_path / "cwd"
    models.mkdir(), cwd.mkdir()
    for directory in (tmp_path, models, cwd):  # beside the model, in the current directory and above the model
        (directory / "secret.txt").write_bytes(SECRET)
    if where == "symlink":
        (models / "link.txt").symlink_to(tmp_path / "secret.txt")
    location = {"cwd": "secret.txt", "parent": "../secret.txt", "absolute": str(tmp_path / "secret.txt"),
                "symlink": "link.txt"}[where]
    path = models / "model.onnx"
    onnx.save(_constant_model(location), path)
    monkeypatch.chdir(cwd)

    with pytest.raises(ModelError) as err:
        network_from_onnx_path(path)
    message = str(err.value)
    assert "1 tensor(s) in external data files" in message and "does not read" in message, message
    assert f"node 'leak' (op Constant), attribute 'value': location {location!r}" in message, message
    assert "save_as_external_data=False" in message

    engine = cwd / "model.engine"
    code = main(["build", str(path), "-o", str(engine), "--backend", "cpu", "-q"])
    err_text = capsys.readouterr().err
    assert code == ModelError.exit_code == 3, err_text
    assert "external data" in err_text and "Traceback" not in err_text
    assert reads == [] and not engine.exists() and not (cwd / "model.manifest.json").exists()


def _if_with_external_constant() -> onnx.ModelProto:
    """The external tensor two subgraphs deep: in an If's then-branch, inside a Loop's body."""
    leak = helper.make_node("Constant", [], ["inner"], name="deep", value=_external("c", "secret.txt"))
    body = helper.make_graph([leak, helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])])
    loop = helper.make_node("Loop", ["", "c0"], [], name="loop", body=body)
    branch = helper.make_graph([loop, helper.make_node("Identity", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Constant", [], ["c0"], value=helper.make_tensor("b", TensorProto.BOOL, [], [True])),
             helper.make_node("If", ["c0"], ["y"], name="branch", then_branch=branch, else_branch=other)]
    return make_model(nodes, {"x": (2,)}, ["y"])


def test_external_data_is_refused_wherever_a_tensor_can_be(reads: list[str]) -> None:
    from reprobuild.frontend.onnx_external import check_no_external_data

    nested = _if_with_external_constant()
    with pytest.raises(ModelError, match=r"node 'branch' \(op If\), subgraph 'then_branch': node 'loop' \(op Loop\), "
                                         r"subgraph 'body': node 'deep' \(op Constant\), attribute 'value': "
                                         r"location 'secret.txt'"):
        parse(nested)

    sparse = helper.make_sparse_tensor(_external("v", "values.bin", 2), helper.make_tensor("i", TensorProto.INT64,
                                                                                         [2], [0, 3]), [5])
    cases = {
        "sparse_value": helper.make_node("Constant", [], ["y"], name="s", sparse_value=sparse),
        "tensors": helper.make_node("Constant", [], ["y"], name="t"),
    }
    cases["tensors"].attribute.append(helper.make_attribute("value_tensors", [_external("a", "a.bin")]))
    for attr, node in cases.items():
        model = make_model([helper.make_node("Identity", ["x"], ["y"])], {"x": (2,)}, ["y"])
        model.graph.node.append(node)
        with pytest.raises(ModelError, match=rf"attribute '{attr if attr != 'tensors' else 'value_tensors'}'"):
            check_no_external_data(model)

    function = helper.make_function("local", "f", ["a"], ["b"],
                                    [helper.make_node("Constant", [], ["b"], name="fc",
                                                      value=_external("k", "k.bin"))],
                                    [helper.make_opsetid("", 17)])
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], {"x": (2,)}, ["y"])
    model.functions.append(function)
    with pytest.raises(ModelError, match=r"function 'f': node 'fc' \(op Constant\), attribute 'value': "
                                         r"location 'k.bin'"):
        check_no_external_data(model)

    weights = make_model([helper.make_node("Add", ["x", "w"], ["y"])], {"x": (2,)}, ["y"],
                         {"w": np.ones(2, np.float32)})
    weights.graph.initializer[0].CopyFrom(_external("w", "w.bin", 2))
    with pytest.raises(ModelError, match=r"initializer 'w': location 'w.bin'"):
        parse(weights)
    assert reads == []


def test_compare_refuses_a_reference_model_with_external_data(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.verify.tolerance import load_reference_model

    (tmp_path / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)  # where onnxruntime would read it from
    with pytest.raises(ModelError, match=r"(?s)external data files.*location 'secret.txt'"):
        load_reference_model(_constant_model("secret.txt").SerializeToString())
