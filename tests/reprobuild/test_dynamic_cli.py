"""The command line for dynamic engines: ``build --profile/--profile-set``, ``--replay`` of a dynamic manifest,
``run``/``compare``/``verify`` at ``--input-shape`` with ``--profile-index``, ``verify --shapes``, and their
errors and exit codes."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import REPO, run_cli

BERT = os.path.join(REPO, "tests", "data", "dynamic", "bert_dynamic.onnx")
PROFILES = ["--profile", "input_ids=1x2:2x16:8x32", "--profile", "attention_mask=1x2:2x16:8x32", "--profile-set",
            "--profile", "input_ids=1x33:4x48:16x64", "--profile", "attention_mask=1x33:4x48:16x64"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> str:
    from reprobuild.cli.main import main

    path = str(tmp_path_factory.mktemp("dyn") / "bert.engine")
    assert main(["build", BERT, "-o", path, "--backend", "cpu", "--quiet", *PROFILES]) == 0
    return path


def test_build_prints_the_profiles_and_replays_to_the_same_bytes(built, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "build", BERT, "-o", str(tmp_path / "again.engine"), "--backend", "cpu",
                           "--replay", built.replace(".engine", ".manifest.json"))
    assert code == 0, out
    assert "profile   0: attention_mask 1x2:2x16:8x32, input_ids 1x2:2x16:8x32" in out
    assert "profile   1: attention_mask 1x33:4x48:16x64, input_ids 1x33:4x48:16x64" in out
    assert "identical to the engine digest the manifest records" in out
    with open(built, "rb") as a, open(tmp_path / "again.engine", "rb") as b:
        assert a.read() == b.read()


def test_run_compare_and_verify_at_a_shape_of_the_second_profile(built, capsys):
    shape = ["--input-shape", "input_ids=3x40", "--input-shape", "attention_mask=3x40", "--profile-index", "1"]
    code, out, err = run_cli(capsys, "compare", built, BERT, *shape)
    assert code == 0, err
    assert "last_hidden_state  3x40x64" in out and "pass" in out
    code, out, err = run_cli(capsys, "verify", built, *shape, "--runs", "2", "--processes", "2")
    assert code == 0, err
    assert "tier       cross_process" in out


def test_a_shape_outside_the_profile_exits_7_naming_the_range(built, capsys):
    code, _, err = run_cli(capsys, "run", built, "--seed", "0", "--input-shape", "input_ids=3x40",
                           "--input-shape", "attention_mask=3x40")
    assert code == 7
    assert "'attention_mask' axis 1 (sequence) is 40, outside optimization profile 0's range [2, 32]" in err


def test_input_shape_on_a_fixed_engine_and_profile_without_a_dynamic_model_are_usage_errors(tmp_path, capsys):
    mlp = os.path.join(REPO, "examples", "mlp.onnx")
    engine = str(tmp_path / "mlp.engine")
    assert run_cli(capsys, "build", mlp, "-o", engine, "--backend", "cpu", "--quiet")[0] == 0
    code, _, err = run_cli(capsys, "run", engine, "--seed", "0", "--input-shape", "x=1x4")
    assert code == 2 and "this engine has fixed shapes" in err
    code, _, err = run_cli(capsys, "build", BERT, "-o", str(tmp_path / "b.engine"), "--backend", "cpu",
                           "--profile", "input_ids=1x2:2x16:8x32", "--profile-set")
    assert code == 2 and "each profile needs at least one --profile" in err
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal
        run_cli(capsys, "build", BERT, "-o", str(tmp_path / "b.engine"), "--backend", "cpu",
                "--profile", "input_ids=1x2:2x16")
    assert exited.value.code == 2 and "NAME=MIN:OPT:MAX" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "build", BERT, "-o", str(tmp_path / "b.engine"), "--backend", "cpu")
    assert code == 3 and "--profile input_ids=" in err  # the advice names both ways


def test_verify_shapes_passes_on_bert(built, capsys):
    code, out, err = run_cli(capsys, "verify", built, "--shapes", "batch=1,3,8", "--shapes", "sequence=5,16",
                             "--runs", "2")
    assert code == 0, err
    for batch in (1, 3, 8):
        for seq in (5, 16):
            assert f"shapes batch={batch} (sequence={seq})" in out
    assert "DIFFERENT" not in out


def _batch_mixing_model() -> onnx.ModelProto:
    """y = x + mean(x over the batch): every sample depends on its batch-mates."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1), helper.make_node("Add", ["x", "m"], ["y"])],
        "mixing", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array([0], np.int64), "axes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_verify_shapes_fails_a_model_whose_samples_see_their_batch_mates(tmp_path, capsys):
    model = tmp_path / "mixing.onnx"
    onnx.save(_batch_mixing_model(), model)
    engine = str(tmp_path / "mixing.engine")
    assert run_cli(capsys, "build", str(model), "-o", engine, "--backend", "cpu", "--quiet",
                   "--profile", "x=1x4:4x4:8x4")[0] == 0
    code, out, _ = run_cli(capsys, "verify", engine, "--shapes", "N=1,2,8", "--runs", "2", "--no-batch-invariance")
    assert code == 10
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("shapes ")}
    assert "identical" in rows["N=1"]
    assert "DIFFERENT" in rows["N=2"] and "DIFFERENT" in rows["N=8"] and "bits differ at position(s)" in rows["N=8"]


def test_the_pytest_plugin_pins_and_checks_a_dynamic_engine(pinned_engine, tmp_path):
    from reprobuild.testing import assert_deterministic

    manifest = tmp_path / "bert.manifest.json"
    profile = {"input_ids": ((1, 2), (2, 16), (8, 32)), "attention_mask": ((1, 2), (2, 16), (8, 32))}
    with pytest.warns(UserWarning, match="pinned a new manifest"):
        first = pinned_engine(BERT, manifest, backend="cpu", profiles=[profile])
    again = pinned_engine(BERT, manifest, backend="cpu")  # replays, the manifest's profiles
    assert again.serialize() == first.serialize() and again.is_dynamic
    report = assert_deterministic(again, runs=2, contexts=1, input_shapes={"input_ids": (3, 9),
                                                                           "attention_mask": (3, 9)})
    assert report.tier == "cross_context"
