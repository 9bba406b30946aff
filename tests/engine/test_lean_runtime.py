"""The runtime path imports only the runtime half: the README/DESIGN claim "the engine never imports the builder or
onnx", and issue 21's lean runtime.

Each bundled CPU example is built by replaying its golden manifest, then loaded and run in a fresh process that
runs only ``Runtime().deserialize_engine`` + ``create_execution_context`` + ``execute``; its ``sys.modules`` is
checked. Also: ``index_table.py`` (which module defines each tactic family and op, what lets the Runtime import
only an engine's families and ops) matches the real registries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reprobuild.cli.main import main
from reprobuild.layers import find_layer
from reprobuild.layers._family_index import FAMILY_INDEX
from reprobuild.ops import find_op, get_op
from reprobuild.registry import index, index_table
from reprobuild.registry.lazy import family_tactics
from tests.helpers import EXAMPLES, REPO

CHILD = r"""
import json, sys
import numpy as np
from reprobuild.engine import Runtime
with open(sys.argv[1], "rb") as f:
    engine = Runtime().deserialize_engine(f.read())
loaded = sorted(sys.modules)
context = engine.create_execution_context()
rng = np.random.default_rng(0)
feeds = {b.name: rng.standard_normal(b.shape).astype(b.dtype) for b in engine.inputs if b.value is None}
context.execute(feeds)
print(json.dumps({"loaded": loaded, "ran": sorted(sys.modules)}))
"""

#: Never imported on the runtime path: the build half, the ONNX frontend, the op definitions (ONNX's half of each
#: op), the manifest schema and pydantic.
NEVER = ("onnx", "onnxruntime", "ml_dtypes", "pydantic", "reprobuild.ops", "reprobuild.manifest", "reprobuild.ir",
         "reprobuild.builder", "reprobuild.frontend", "reprobuild.passes")

#: The layer-definition modules a run of each example imports: those of the ops its layers use (the loader checks each
#: layer through its type inference, and reference tactics run its NumPy code) and the modules those import
#: themselves (the fused layers build on Conv, Gemm, Add, Mul and the activations; families, formulas (the
#: elementwise formula table), _window and _nn_pool are shared helpers). Every other layer module stays unloaded.
LAYER_MODULES = {
    "mlp": {"op_fused_gemm", "op_gemm", "op_softmax", "op_fused_conv", "op_conv", "op_arith", "op_activation",
            "_activation_clip", "_activation_prelu", "families", "formulas", "_window"},
    "small_cnn": {"op_fused_conv", "op_conv", "op_pool", "op_tensor", "op_gemm", "op_softmax", "op_arith",
                  "op_activation", "_activation_clip", "_activation_prelu", "families", "formulas", "_window",
                  "_nn_pool"},
}
#: The layer framework: the package, the base class, the registry, its list, its generated index and schemas.
LAYERS_FRAMEWORK = {"", "base", "_xp", "registry", "_family_index", "_layer_list", "_attribute_schemas"}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.fixture(scope="module", params=sorted(LAYER_MODULES))
def modules(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, list[str]]]:
    name = request.param
    engine = str(tmp_path_factory.mktemp("lean") / f"{name}.engine")
    golden = os.path.join(REPO, "manifests", "golden", f"{name}.cpu.manifest.json")
    assert main(["build", os.path.join(EXAMPLES, f"{name}.onnx"), "-o", engine, "--replay", golden]) == 0
    out = subprocess.run([sys.executable, "-c", CHILD, engine], capture_output=True, text=True, cwd=REPO, check=True)
    return name, json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_imports_no_build_half_and_only_the_engines_ops(modules: tuple[str, dict[str, list[str]]]) -> None:
    name, seen = modules
    loaded = seen["loaded"]
    assert [m for m in loaded if any(_within(m, p) for p in NEVER)] == []
    for stage in ("loaded", "ran"):
        layers = {m.removeprefix("reprobuild.layers").lstrip(".") for m in seen[stage]
                  if _within(m, "reprobuild.layers")}
        extra = layers - LAYERS_FRAMEWORK - LAYER_MODULES[name]
        assert not extra, (stage, sorted(extra))
    # the tactic families an engine does not use stay unloaded (neither example has a normalization layer)
    assert not {"reprobuild.kernels.norm", "reprobuild.kernels.batchnorm"} & set(seen["ran"])


def test_running_imports_no_builder_onnx_or_manifest(modules: tuple[str, dict[str, list[str]]]) -> None:
    _, seen = modules
    assert [m for m in seen["ran"] if any(_within(m, p) for p in NEVER)] == []


def test_the_index_tables_match_the_registries() -> None:
    assert index.main(["--check"]) == 0, f"run `{index.INDEX_COMMAND}`"
    assert index_table.FAMILY_MODULES["elementwise_fused"] == "reprobuild.kernels.fused_elementwise"
    assert FAMILY_INDEX["Conv"] == "op_conv" and find_op("Conv") is get_op("Conv")
    assert type(find_layer("Conv")).__module__ == "reprobuild.layers.op_conv"
    assert type(get_op("Conv")).__module__ == "reprobuild.ops.op_conv"
    assert isinstance(get_op("Conv"), type(find_layer("Conv")))  # an op definition is its layer definition + ONNX
    assert family_tactics("reference") is None
    assert find_layer("Dropout") is None and find_layer("Shape") is None  # lowered / computed at parse: no layers


DYNAMIC_CHILD = r"""
import json, sys
import numpy as np
from reprobuild.engine import Runtime
with open(sys.argv[1], "rb") as f:
    engine = Runtime().deserialize_engine(f.read())
context = engine.create_execution_context()
rng = np.random.default_rng(0)
for batch in (1, 5):
    context.set_input_shape("image", (batch, 3, 32, 32))
    out = context.execute({"image": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)})
    assert out["probs"].shape == (batch, 10)
print(json.dumps({"ran": sorted(sys.modules)}))
"""


def test_a_dynamic_engine_runs_every_shape_on_the_runtime_half_alone(tmp_path) -> None:
    """Specializing a dynamic engine at a run's shape (symbolic sizes, the per-shape engine) needs nothing of the
    build half either."""
    engine = str(tmp_path / "dynamic.engine")
    assert main(["build", os.path.join(EXAMPLES, "small_cnn_dynamic.onnx"), "-o", engine, "--backend", "cpu",
                 "--quiet", "--profile", "image=1x3x32x32:4x3x32x32:8x3x32x32"]) == 0
    out = subprocess.run([sys.executable, "-c", DYNAMIC_CHILD, engine], capture_output=True, text=True, cwd=REPO,
                         check=True)
    ran = json.loads(out.stdout.strip().splitlines()[-1])["ran"]
    assert [m for m in ran if any(_within(m, p) for p in NEVER)] == []
