"""The bad-manifest corpus (``tests/corpus/manifest``, written by ``python -m tests.corpus.make_manifest``): each
file gives its typed error, with a message naming the defect, from the API and from the command line (its exit
code, never 1, and no traceback). Then the caps themselves, on the embedded-manifest path too, and the build
hardening the manifest records: seeds, non-finite weights, the memory cap."""

from __future__ import annotations

import os
import re
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
from reprobuild.builder.builder import memory_cap
from reprobuild.builder.config import check_seed
from reprobuild.core.errors import FormatError, ReplayMismatchError, ReprobuildError, ResourceError, UsageError
from reprobuild.core.logger import Logger, RecordingLogger, Severity
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.backend import get_backend
from reprobuild.manifest import manifest_from_json, manifest_to_json, read_manifest
from reprobuild.manifest.io import MAX_JSON_DEPTH, load_json, pinned_bytes, pinned_from_json
from tests.corpus import make_manifest
from tests.helpers import EXAMPLES, make_model, run_cli

CORPUS = Path(make_manifest.OUT)
QUIET = Logger(Severity.ERROR)

#: file -> (error class, message regex, exit code of ``reprobuild build --replay FILE``)
TABLE: dict[str, tuple[type[ReprobuildError], str, int]] = {
    "nested_100000_deep": (FormatError, r"nests arrays and objects 10000[23] levels deep; a manifest nests at most 64",
                           4),  # 100,000 in pinned.model.producer: 100,003 in the file, 100,002 in the pinned part
    "integer_5000_digits": (FormatError, r"has an integer of 5000 digits .* within \[-2\*\*63, 2\*\*64\)", 4),
    "integer_2_pow_64": (FormatError, r"has the integer 18446744073709551616, outside \[-2\*\*63, 2\*\*64\)", 4),
    "integer_below_minus_2_pow_63": (FormatError, r"has the integer -9223372036854775809, outside", 4),
    "negative_seed": (FormatError, r"does not match the manifest schema(.|\n)*pinned\.config\.seed(.|\n)*greater than "
                                   r"or equal to 0", 4),
    "negative_golden_seed": (FormatError, r"does not match the manifest schema(.|\n)*pinned\.golden\.seed(.|\n)*"
                                          r"greater than or equal to 0", 4),
    "nan_literal": (FormatError, r"has the literal NaN, which is not JSON", 4),
    "infinity_literal": (FormatError, r"has the literal Infinity, which is not JSON", 4),
    "minus_infinity_literal": (FormatError, r"has the literal -Infinity, which is not JSON", 4),
    "float_1e999_overflows": (FormatError, r"has the number 1e999, which overflows a float", 4),
    "replay_layer_shape_altered": (ReplayMismatchError, r"layer 'stem' \(FusedConv\): output 0 \('r1'\) shape "
                                                        r"recorded \[1, 16, 32, 32\], this build \[2, 16, 32, 32\]", 8),
    "replay_layer_dtype_altered": (ReplayMismatchError, r"layer 'fc1' \(FusedGemm\): output 0 \('a1'\) dtype "
                                                        r"recorded 'float16', this build 'float32'", 8),
    "replay_attribute_altered": (ReplayMismatchError, r"layer 'pool' \(MaxPool\): attribute strides recorded "
                                                      r"\[1, 1\], this build \[2, 2\]", 8),
    "replay_attribute_removed": (ReplayMismatchError, r"layer 'branch_b' \(Conv\): attribute dilations recorded "
                                                      r"\(absent\), this build \[2, 2\]", 8),
    "replay_kernel_digest_altered": (ReplayMismatchError, r"layer 'stem' \(FusedConv\): recorded tactic conv\.\w+ v\d+ "
                                                          r"has code digest 0{16}\.\.\., .*the code it runs "
                                                          r"changed", 8),
    "replay_layers_reordered": (ReplayMismatchError, r"layer order: position 1 recorded 'res1', this build 'pool'"
                                                     r"\n.*layer order: position 2 recorded 'pool', this build "
                                                     r"'res1'", 8),
    "replay_layer_duplicated": (ReplayMismatchError, r"manifest layer 'fc3' \(Gemm, key [0-9a-f]{12}\) is recorded "
                                                     r"more than once", 8),
    "replay_layer_renamed": (ReplayMismatchError, r"layer 'head' \(Gemm\): name recorded 'classifier', this build "
                                                  r"'head'", 8),
    "replay_op_altered": (ReplayMismatchError, r"layer 'fc3' \(Gemm\): op recorded 'MatMul', this build 'Gemm'", 8),
    "replay_onnx_nodes_altered": (ReplayMismatchError, r"layer 'stem' \(FusedConv\): ONNX nodes recorded \['x'\], "
                                                       r"this build \['stem', ", 8),
    "replay_precision_altered": (ReplayMismatchError, r"layer 'fc3' \(Gemm\): precision recorded fp16, this build "
                                                      r"fp32", 8),
    "replay_workspace_altered": (ReplayMismatchError, r"layer 'stem' \(FusedConv\): workspace recorded 256 bytes, "
                                                      r"this build \d+ bytes", 8),
    "replay_network_input_shape_altered": (ReplayMismatchError, r"network input 0 \('input'\) shape recorded "
                                                                r"\[1, 64\], this build \[8, 64\]", 8),
    "replay_memory_plan_altered": (ReplayMismatchError, r"pinned\.memory\.activation_bytes: recorded 256, this build "
                                                        r"\d+(.|\n)*edited after its build", 8),
}
CASES = {case.name: case for case in make_manifest.CASES}


def _path(name: str) -> Path:
    return CORPUS / f"{name}{make_manifest.SUFFIX}"


def _model(name: str) -> str:
    return os.path.join(EXAMPLES, f"{CASES[name].example}.onnx")


def test_every_corpus_file_is_in_the_table() -> None:
    files = {p.name[:-len(make_manifest.SUFFIX)] for p in CORPUS.iterdir()}
    assert files == set(TABLE), "each corpus file needs a row in TABLE (and each row a file)"
    assert set(CASES) == set(TABLE)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_corpus_is_what_make_manifest_writes(name: str) -> None:
    assert _path(name).read_bytes() == make_manifest.render(CASES[name]), \
        "the corpus is stale; run: python -m tests.corpus.make_manifest"


def test_the_deep_file_stays_small() -> None:
    assert _path("nested_100000_deep").stat().st_size < 250_000


@pytest.mark.parametrize("name", sorted(TABLE))
def test_the_api_refuses_each_file_naming_the_defect(name: str) -> None:
    error, message, _ = TABLE[name]
    if error is not ReplayMismatchError:
        with pytest.raises(error, match=message):
            read_manifest(_path(name))
        return
    manifest = read_manifest(_path(name))  # loads: the defect is only visible against a build
    config = BuilderConfig.from_record(manifest.pinned.config)
    config.algorithm_selector = ReplaySelector(manifest, "ignore", QUIET)  # on any machine: env differences allowed
    network, _ = network_from_onnx_path(_model(name), QUIET)
    with pytest.raises(ReplayMismatchError, match=message):
        Builder(QUIET).build(network, config)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_the_cli_exits_with_the_code_of_each_error_and_no_traceback(name: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, message, code = TABLE[name]
    engine = tmp_path / "x.engine"
    got, _, err = run_cli(capsys, "build", _model(name), "--replay", str(_path(name)), "-o", str(engine),
                          "--env-policy", "ignore", "-q")
    assert got == code != 1, err
    assert re.search(message, err), err
    assert "Traceback" not in err and "internal error" not in err
    assert not engine.exists(), "a refused replay wrote an engine"


@pytest.mark.parametrize("name", sorted(n for n, row in TABLE.items() if row[0] is FormatError))
def test_diff_refuses_each_unreadable_file_as_trouble(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    golden = os.path.join(make_manifest.GOLDEN, f"{CASES[name].example}.cpu.manifest.json")
    code, _, err = run_cli(capsys, "diff", str(_path(name)), golden)
    assert code == 2, err  # diff speaks diff(1): 2 is trouble
    assert re.search(TABLE[name][1], err), err
    assert "Traceback" not in err and "internal error" not in err


# --- the loader's caps -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def golden() -> Any:
    return read_manifest(os.path.join(make_manifest.GOLDEN, "mlp.cpu.manifest.json"))


def test_nesting_up_to_the_cap_parses_and_one_more_level_does_not() -> None:
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json(deepest.encode()) is not None
    with pytest.raises(FormatError, match=f"nests arrays and objects {MAX_JSON_DEPTH + 1} levels deep"):
        load_json(("[" + deepest + "]").encode())


@pytest.mark.parametrize("text", [
    '{"a": "' + "[" * 1000 + '"}',  # brackets inside a string do not nest
    '{"a": "\\\\", "b": "' + "{" * 1000 + '"}',  # an escaped backslash does not escape the closing quote
    '{"a": "\\"' + "[" * 1000 + '"}',  # an escaped quote does not close the string
])
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    assert isinstance(load_json(text.encode()), dict)


def test_integers_at_the_ends_of_the_range_load() -> None:
    assert load_json(b"[-9223372036854775808, 18446744073709551615]") == [-(2**63), 2**64 - 1]
    for text in (b"[18446744073709551616]", b"[-9223372036854775809]", b"[" + b"9" * 4400 + b"]"):
        with pytest.raises(FormatError, match="integer"):
            load_json(text)


def test_the_size_cap_holds_for_bytes_given_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.manifest import io

    monkeypatch.setattr(io, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(FormatError, match="is 101 bytes; a manifest may be at most 100 bytes"):
        io.load_json(b" " * 101)


def _pinned_text(text: str) -> str:
    """The pinned part of a manifest file's text (keys are sorted: it comes just before schema_version)."""
    start = text.index('\n  "pinned": ') + len('\n  "pinned": ')
    return text[start:text.index(',\n  "schema_version": ')]


def _defective_pinned_parts() -> list[str]:
    """The unreadable corpus files whose defect lies in the pinned part (the others' is in the evidence)."""
    names = []
    for name, (error, _, _) in sorted(TABLE.items()):
        golden = Path(make_manifest.GOLDEN, f"{CASES[name].example}.cpu.manifest.json").read_text()
        if error is FormatError and _pinned_text(_path(name).read_text()) != _pinned_text(golden):
            names.append(name)
    return names


@pytest.mark.parametrize("name", _defective_pinned_parts())
def test_an_embedded_manifest_has_the_same_caps(name: str) -> None:
    """The manifest an engine embeds (the pinned part) goes through the same loader: each defect of the corpus
    that lies in the pinned part is refused there too."""
    pinned = _pinned_text(_path(name).read_text())
    error, message, _ = TABLE[name]
    with pytest.raises(error, match=message.replace(r"pinned\.", "")):  # paths are relative to the pinned part
        pinned_from_json(pinned.encode(), "embedded manifest")


def test_the_embedded_manifest_of_a_golden_still_loads(golden: Any) -> None:
    assert pinned_from_json(pinned_bytes(golden.pinned)) == golden.pinned
    assert manifest_from_json(manifest_to_json(golden)) == golden


# --- seeds -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.5])
def test_the_config_refuses_a_seed_outside_0_to_2_pow_64(seed: Any) -> None:
    with pytest.raises(UsageError, match=r"seed must be an integer from 0 to 2\*\*64 - 1"):
        BuilderConfig(backend="cpu", seed=seed).validate()
    with pytest.raises(UsageError, match=r"^--seed must be an integer"):
        check_seed(seed, "--seed")


def test_the_largest_seed_builds_and_is_recorded() -> None:
    assert check_seed(2**64 - 1, "--seed") == 2**64 - 1
    network, _ = network_from_onnx_path(os.path.join(EXAMPLES, "mlp.onnx"), QUIET)
    result = Builder(QUIET).build(network, BuilderConfig(backend="cpu", seed=2**64 - 1, warmup=0, iterations=1))
    assert result.manifest.pinned.config.seed == result.manifest.pinned.golden.seed == 2**64 - 1
    assert manifest_from_json(manifest_to_json(result.manifest)) == result.manifest


# --- non-finite weights ------------------------------------------------------------------------------------------

def _one_node(tmp_path: Path, name: str, nodes: list[Any], inputs: dict[str, list[int]],
              initializers: dict[str, np.ndarray] | None = None) -> Any:
    path = tmp_path / f"{name}.onnx"
    onnx.save(make_model(nodes, inputs, ["y"], initializers), str(path))
    return network_from_onnx_path(str(path), QUIET)[0]


def test_a_nan_weight_builds_with_a_warning_and_a_record_in_the_evidence(tmp_path: Path) -> None:
    w = np.ones((4, 3), np.float32)
    w[0, 0] = w[1, 1] = np.nan
    w[2, 2] = np.inf
    w[3, 0] = -np.inf
    network = _one_node(tmp_path, "nan", [helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [2, 4]}, {"w": w})
    logger = RecordingLogger()
    result = Builder(logger).build(network, BuilderConfig(backend="cpu", warmup=0, iterations=1))
    warnings = [msg for msg in logger.messages(Severity.WARNING) if "non-finite" in msg]
    assert len(warnings) == 1 and "'w' (2 NaN, 1 +inf, 1 -inf)" in warnings[0] and "nonfinite_weights" in warnings[0]
    assert result.manifest.evidence is not None
    records = [r.model_dump() for r in result.manifest.evidence.nonfinite_weights]
    assert records == [{"name": "w", "nan": 2, "posinf": 1, "neginf": 1}]
    assert manifest_from_json(manifest_to_json(result.manifest)) == result.manifest


def test_finite_weights_record_nothing(golden: Any) -> None:
    network, _ = network_from_onnx_path(os.path.join(EXAMPLES, "mlp.onnx"), QUIET)
    logger = RecordingLogger()
    result = Builder(logger).build(network, BuilderConfig(backend="cpu", warmup=0, iterations=1))
    assert result.manifest.evidence is not None and result.manifest.evidence.nonfinite_weights == []
    assert not any("non-finite" in msg for msg in logger.messages(Severity.WARNING))
    assert golden.evidence is not None and golden.evidence.nonfinite_weights == []  # older manifests still load


# --- the build's memory cap --------------------------------------------------------------------------------------

def test_a_huge_input_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    """An input declared [65536, 65536] (16 GiB per float32 tensor) was OOM-killed; now it is a ResourceError
    before any activation or timing buffer exists."""
    network = _one_node(tmp_path, "huge", [helper.make_node("Relu", ["x"], ["y"])], {"x": [65536, 65536]})
    tracemalloc.start()
    try:
        with pytest.raises(ResourceError) as err:
            Builder(QUIET).build(network, BuilderConfig(backend="cpu", max_memory=8 * 2**30))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(err.value)
    needs = re.search(r"needs (\d+) bytes \([\d.]+ GiB\) of memory at once, over the cap set by --max-memory", text)
    assert needs is not None, text
    assert int(needs.group(1)) > 2 * 2**34  # the input, the output and more
    assert "8589934592 bytes (8.00 GiB)" in text and "--max-memory" in text
    assert peak < 64 * 2**20, f"{peak} bytes were allocated before the refusal"
    assert err.value.exit_code == 13


def test_the_default_cap_is_the_hosts_physical_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1024}  # a host of 4 MiB
    assert memory_cap(BuilderConfig(), get_backend("cpu"))[0] == os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES")
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    assert memory_cap(BuilderConfig(), get_backend("cpu")) == (4 * 2**20, "the host's physical memory")
    network = _one_node(tmp_path, "mib", [helper.make_node("Relu", ["x"], ["y"])], {"x": [1024, 1024]})
    with pytest.raises(ResourceError, match=r"over the host's physical memory, 4194304 bytes \(4.00 MiB\)"):
        Builder(QUIET).build(network, BuilderConfig(backend="cpu"))


@pytest.mark.parametrize("cap, fits", [(2 * 2**20, False), (16 * 2**20, False), (64 * 2**20, True)])
def test_a_single_tensor_over_the_cap_and_every_buffer_count(cap: int, fits: bool, tmp_path: Path) -> None:
    """A 4 MiB tensor: over a 2 MiB cap by itself; over 16 MiB with the context's arena, the bindings and the
    golden trace (about 20 MiB in all); within 64 MiB."""
    network = _one_node(tmp_path, "relu", [helper.make_node("Relu", ["x"], ["y"])], {"x": [1024, 1024]})
    config = BuilderConfig(backend="cpu", warmup=0, iterations=1, max_memory=cap)
    if fits:
        assert Builder(QUIET).build(network, config).engine
    else:
        with pytest.raises(ResourceError, match=rf"over the cap set by --max-memory \(BuilderConfig\.max_memory\), "
                                                rf"{cap} bytes"):
            Builder(QUIET).build(network, config)


@pytest.mark.parametrize("cap", [0, -1, True])
def test_a_cap_that_is_not_a_positive_byte_count_is_a_usage_error(cap: Any) -> None:
    with pytest.raises(UsageError, match="max_memory"):
        BuilderConfig(max_memory=cap).validate()
