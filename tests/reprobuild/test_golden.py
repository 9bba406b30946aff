"""The determinism regression test the project runs on itself: replay each golden manifest of the bundled
examples and get the identical engine digest.

The engine embeds the environment it was built in, so the digest can only match where the environment does (the
whole fingerprint: on the CPU that includes the BLAS kernel OpenBLAS picked, ``blas.core``, and the CPU's vendor,
family, model and flags). Where it differs (another CPU, another NumPy, ``OPENBLAS_CORETYPE=Haswell``), the test
still replays (with the environment policy set to ignore) and checks everything else: zero timings, every decision
honoured, and a pinned manifest identical but for the environment and the golden outputs (whose numbers the
environment decides); it then warns, naming the fields that differ.
"""

from __future__ import annotations

import os
import warnings

import pytest

from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
from reprobuild.core.errors import ReplayMismatchError
from reprobuild.environment.fingerprint import environment_fingerprint
from reprobuild.environment.policy import compare_environments, difference_summary
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.backend import get_backend
from reprobuild.manifest import read_manifest
from reprobuild.manifest.models import SCHEMA_VERSION, LegacyTacticRef
from tests.helpers import EXAMPLES, REPO

GOLDEN = ("mlp", "small_cnn")


@pytest.mark.parametrize("example", GOLDEN)
def test_golden_manifest_replays_to_its_engine_digest(example: str) -> None:
    golden = read_manifest(os.path.join(REPO, "manifests", "golden", f"{example}.cpu.manifest.json"))
    assert golden.engine is not None
    diffs = compare_environments(golden.pinned.environment, environment_fingerprint(get_backend("cpu")))
    config = BuilderConfig.from_record(golden.pinned.config)
    config.algorithm_selector = ReplaySelector(golden, "ignore" if diffs else "strict")
    network, _ = network_from_onnx_path(os.path.join(EXAMPLES, f"{example}.onnx"))
    result = Builder().build(network, config)
    assert result.tactics_timed == 0
    # Elsewhere the numbers themselves may differ (another BLAS, another CPU), and with them the golden outputs.
    vary = {"environment"} if not diffs else {"environment", "golden"}
    assert result.manifest.pinned.model_dump(exclude=vary) == golden.pinned.model_dump(exclude=vary)
    if not diffs:
        assert result.engine_sha256 == golden.engine.sha256
        assert result.manifest.pinned == golden.pinned
    else:
        warnings.warn(f"golden {example}: this machine's environment differs from the golden's in {len(diffs)} "
                      f"field(s) ({difference_summary(diffs)}); the decisions and the pinned content replay "
                      "identically, but the engine digest and the golden outputs can only be compared in the "
                      "recorded environment (under --env-policy strict, the replay CLI refuses with exit code 9; "
                      "regenerate with python manifests/make_golden.py there)", stacklevel=1)


@pytest.mark.parametrize("example", GOLDEN)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_old_goldens_load_migrated_and_fail_closed_naming_each_changed_tactic(example: str, version: str) -> None:
    """The goldens pinned by earlier schemas still load, migrated to the current one, with their tactics as
    recorded (``LegacyTacticRef``: a source_sha256, the digest of source text that schema 3 and older recorded),
    and a replay of one refuses to build, naming every layer and tactic: no such digest can be compared with the
    identity this installation gives a tactic (code_sha256), so nothing recorded that way is trusted."""
    old = read_manifest(os.path.join(REPO, "tests", "fixtures", "manifests", version, f"{example}.cpu.manifest.json"))
    assert old.schema_version == SCHEMA_VERSION
    assert old.pinned.config.precision == "fp32" and old.pinned.execution.cuda_graph is False
    assert old.pinned.memory.library_workspace_bytes == 0
    assert {layer.precision for layer in old.pinned.layers} <= {"fp32", "int64"}
    assert all(isinstance(layer.tactic, LegacyTacticRef) for layer in old.pinned.layers)
    if version == "v1":
        assert old.pinned.config.passes[0].version == 1
        assert all(layer.onnx_nodes == [layer.name] for layer in old.pinned.layers)
    config = BuilderConfig.from_record(old.pinned.config)
    config.algorithm_selector = ReplaySelector(old, "ignore")
    network, _ = network_from_onnx_path(os.path.join(EXAMPLES, f"{example}.onnx"))
    with pytest.raises(ReplayMismatchError) as err:
        Builder().build(network, config)
    message = str(err.value)
    assert "cannot replay the manifest" in message
    recorded = {layer.name for layer in network.layers}
    for layer in old.pinned.layers:
        if layer.name in recorded:  # a layer this network still has (v1 small_cnn predates FusedConv)
            assert f"layer {layer.name!r}" in message and layer.tactic.label in message
    assert message.count("has only a source_sha256 (schema 3 or older") >= 1
