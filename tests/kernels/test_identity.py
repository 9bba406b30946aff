"""Tactic identity changes exactly when the computation does (issue 20's experiments, as tests).

Python edits are made to a copy of the package and the copy's identities computed in a subprocess (PYTHONPATH
pointing at the copy); CUDA edits are fed to the identity functions as edited source text. A docstring or comment
changes nothing; an ndarray constant, or an op looked up by name, changes exactly the tactics that reach it; a new
kernel or block shape in a ``.cu`` file changes no existing identity.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobuild.builder.selection import layer_spec
from reprobuild.kernels import cublaslt, cuda_launch
from reprobuild.kernels.identity import compute_identity, package_text
from reprobuild.kernels.launch import KernelLaunch, LaunchPlan
from reprobuild.kernels.tactic import Tactic
from reprobuild.registry import builtin_registry
from tests.helpers import CUDA_SKIP, REPO
from tests.kernels.cases import CASES

#: The tactics the Python experiments look at: every hand-written one of the families the edits touch, and the
#: reference tactics of the ops involved.
PROBED_OPS = ("Conv", "FusedConv", "FusedGemm", "FusedElementwise", "Sigmoid", "Relu", "Gemm")


def _probed() -> list[Tactic]:
    return [t for t in builtin_registry().all() if t.family in ("conv", "gemm", "elementwise_fused")
            or (t.family == "reference" and t.ops[0] in PROBED_OPS)]


def _copy_of_the_package(root: Path) -> Path:
    """reprobuild laid out as it installs (engine/ and kernels/ inside the package), without caches."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(REPO, "reprobuild"), root / "reprobuild", ignore=ignore)
    for name in ("engine", "kernels"):
        shutil.copytree(os.path.join(REPO, name), root / "reprobuild" / name, ignore=ignore)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} should occur once"
    path.write_text(text.replace(old, new))


_PROBE = """
import json, sys
import reprobuild.kernels
from reprobuild.kernels.identity import compute_identity
from reprobuild.registry import builtin_registry
assert reprobuild.kernels.__file__.startswith(sys.argv[1]), reprobuild.kernels.__file__
wanted = set(json.loads(sys.argv[2]))
print(json.dumps({t.label: compute_identity(t).code_sha256 for t in builtin_registry().all() if t.label in wanted}))
"""


def _identities_of_edited_copy(tmp_path: Path, edits: list[tuple[str, str, str]]) -> dict[str, str]:
    root = _copy_of_the_package(tmp_path / "src")
    for relative, old, new in edits:
        _edit(root / relative, old, new)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(root)}
    labels = json.dumps([t.label for t in _probed()])
    result = subprocess.run([sys.executable, "-c", _PROBE, str(root), labels], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def installed() -> dict[str, str]:
    return {t.label: compute_identity(t).code_sha256 for t in _probed()}


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert set(before) == set(after)
    return {label for label in before if before[label] != after[label]}


def test_docstrings_and_comments_change_no_identity(tmp_path: Path, installed: dict[str, str]) -> None:
    after = _identities_of_edited_copy(tmp_path, [
        ("reprobuild/kernels/conv.py", '"""Every size a convolution kernel needs, derived once from the layer."""',
         '"""Every size a convolution kernel needs.\n\n    Derived once from the layer, reread by every tactic."""'),
        ("reprobuild/kernels/conv.py", "# reduction length of one output", "# K: what one output sums over"),
        ("reprobuild/layers/formulas.py", '"""1 / (1 + e^-x), written so that no exponential overflows',
         '"""The logistic function 1 / (1 + e^-x), written so that no exponential overflows'),
    ])
    assert _changed(installed, after) == set()


def test_an_ndarray_constant_changes_the_tactics_that_use_it(tmp_path: Path, installed: dict[str, str]) -> None:
    after = _identities_of_edited_copy(tmp_path, [
        ("reprobuild/kernels/conv.py", "[0.5, -0.5, 0.5]", "[0.5, -0.5, 0.25]")])  # WINOGRAD_G
    assert _changed(installed, after) == {"conv.cuda_winograd_cublas v2", "conv.cuda_winograd_cublas_tf32 v2"}


def _labels(family: str, *names: str) -> set[str]:
    """The labels (with the installed versions) of the probed tactics of ``family`` named ``names``."""
    return {t.label for t in _probed() if t.family == family and t.name in names}


def test_an_op_reached_by_name_changes_the_tactics_that_apply_it(tmp_path: Path, installed: dict[str, str]) -> None:
    """sigmoid() is what the Sigmoid op computes, a formula of the table (reprobuild/layers/formulas.py) that the
    references compute through: the CPU convolutions apply it through FusedConv's epilogue (which imports the
    Sigmoid definition), FusedGemm through the same epilogue, FusedElementwise through its step ops; the generated
    kernels' C is written from the whole table. Relu computes through the same table but reaches only its own entry,
    so it is unchanged; so are the CUDA convolutions, which compute their epilogue in the committed epilogue.cuh."""
    after = _identities_of_edited_copy(tmp_path, [
        ("reprobuild/layers/formulas.py", 'e = m.let("e", m.exp(-m.abs(x)))', 'e = m.let("e", m.exp(-m.abs(x) * 1))')])
    references = {f"cpu_{op}" for op in ("FusedConv", "FusedGemm", "FusedElementwise", "Sigmoid")}
    assert _changed(installed, after) == _labels("conv", "cpu_im2col_gemm", "cpu_tap_accumulate") | _labels(
        "elementwise_fused", "cuda_generated") | _labels("reference", *references, *(
            name.replace("cpu_", "cuda_") for name in references))


def test_a_new_formula_changes_only_the_tactics_that_take_the_whole_table(tmp_path: Path,
                                                                          installed: dict[str, str]) -> None:
    """The layers reach the formula table entry by entry (``code_digest.KEYED``): a new entry changes no layer's
    reference, only the generated kernels, whose C may be any op's formula."""
    after = _identities_of_edited_copy(tmp_path, [
        ("reprobuild/layers/formulas.py", '"Sqrt": "sqrt", "Sub": "sub", "Tanh": "tanh",',
         '"Sqrt": "sqrt", "Sub": "sub", "Tanh": "tanh", "Softsign": _identity,')])
    assert _changed(installed, after) == _labels("elementwise_fused", "cuda_generated")


def _cuda_tactics() -> list[Tactic]:
    return [t for t in builtin_registry().all() if t.cuda_kernels or t.generated_cuda]


def _edited_reader(edits: dict[str, tuple[str, str]]) -> Callable[[str], str]:
    def read(name: str) -> str:
        text = package_text(name)
        if name in edits:
            old, new = edits[name]
            assert text.count(old) == 1, f"{name}: {old!r} should occur once"
            text = text.replace(old, new)
        return text
    return read


def _cuda_changes(edits: dict[str, tuple[str, str]]) -> set[str]:
    read = _edited_reader(edits)
    return {t.label for t in _cuda_tactics()
            if compute_identity(t, read).code_sha256 != compute_identity(t).code_sha256}


APPENDED_KERNEL = """
extern "C" __global__ void conv_scale(elem_t* out, float s, long long total)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x)
        out[i] = to_elem(residual_activation(ld(out[i]) * s, nullptr, i, 0, 0.f, 0.f));
}
"""


@pytest.mark.parametrize("edits", [
    {"epilogue.cuh": ("// act: 0 none", "// (a comment edited)\n// act: 0 none")},
    {"conv.cu": ("#include \"epilogue.cuh\"\n", "#include \"epilogue.cuh\"\n" + APPENDED_KERNEL)},
    {"conv_mma.cu": ("CONV_MMA(64, 64, 2, 2)\n", "CONV_MMA(64, 64, 2, 2)\nCONV_MMA(256, 128, 4, 4)\n")},
    {"gemm.cu": ("#define THREADS 256", "#define THREADS 256\n#define UNUSED_TILE 512  // for a future kernel")},
], ids=["comment_in_epilogue_cuh", "kernel_appended_to_conv_cu", "new_conv_mma_block_shape", "unused_define"])
def test_cuda_edits_outside_what_a_kernel_reaches_change_no_identity(edits: dict[str, tuple[str, str]]) -> None:
    assert _cuda_changes(edits) == set()


def test_a_cuda_edit_changes_exactly_the_tactics_whose_kernels_reach_it() -> None:
    residual = _cuda_changes({"epilogue.cuh": ("v = __fmul_rn(v, s0);", "v = __fmul_rn(s0, v);")})
    reaching = {t.label for t in _cuda_tactics()
                if any("residual_activation" in package_text(f) for f in t.cuda_kernels)}
    assert residual == reaching - {"gemm.cuda_cublas v2", "gemm.cuda_cublas_tf32 v1", "gemm.cuda_tiled v2",
                                   "gemm.cuda_splitk_atomic v2",
                                   "gemm.cuda_cublaslt v1"}  # gemm.cu kernels that apply no activation
    assert {"conv.cuda_direct v2", "conv.cuda_implicit_gemm_mma_64x64 v2", "gemm.cuda_tiled_epilogue v2"} <= residual
    mma = _cuda_changes({"conv_mma.cu": ("#define PAD 8", "#define PAD 16")})
    assert mma == {f"conv.cuda_implicit_gemm_mma_{s} v2" for s in ("128x128", "128x64", "64x128", "64x64")}
    # a generated kernel: its prelude reaches dtype.cuh's conversions, not epilogue.cuh
    half = _cuda_changes({"dtype.cuh": ('asm("cvt.rn.f16.f32 %0, %1;"', 'asm("cvt.rz.f16.f32 %0, %1;"')})
    (generated,) = _labels("elementwise_fused", "cuda_generated")
    assert generated in half and generated not in residual
    # reduce.cuh's tree: exactly the kernels that reduce in one block
    tree = _cuda_changes({"reduce.cuh": ("if (tid < half) partial[tid] = op(partial[tid], partial[tid + half]);",
                                         "if (tid < half) partial[tid] = op(partial[tid + half], partial[tid]);")})
    assert tree == {"attention.cuda_cublas v3", "norm.cuda_rowwise v2", "norm.cuda_rms_rowwise v1",
                    "pool.cuda_global_mean v2", "reduce.cuda_reduce v1", "softmax.cuda_rowwise v2"}


def _launched(tactic: Tactic, spec: object, backend: object) -> set[str]:
    kernel = tactic.prepare(spec, backend)  # type: ignore[arg-type]
    assert isinstance(kernel, LaunchPlan), f"{tactic.label} is not a launch plan"
    return {x.kernel.split("[")[0] for x in kernel.launches if isinstance(x, KernelLaunch)}


def _bound(tactic: Any, spec: Any, backend: Any) -> Any:
    """A tactic that chooses its parameters per layer (cuBLASLt's algorithms), bound: to the library's first
    algorithm on a GPU, to placeholder values on the CPU (where nothing is bound or run)."""
    if not tactic.per_layer_parameters:
        return tactic
    if getattr(backend, "name", "") == "cuda":
        return tactic.variants(spec, backend)[0]
    _, epilogue, _ = tactic.matmul(spec, dict(spec.constants))
    return tactic.with_parameters({**{f: 0 for f in cublaslt.FIELDS}, "split_k": 1, "epilogue": epilogue})


def _check_declarations(backend: object) -> None:
    rng = np.random.default_rng(0)
    exercised: set[str] = set()
    for case in CASES:
        spec = layer_spec(case.network(case.make(rng)[0]), 0)
        for tactic in builtin_registry().candidates(spec.op, "cuda"):
            if not tactic.cuda_kernels or tactic.ineligibility(spec) is not None:
                continue
            tactic = _bound(tactic, spec, backend)
            declared = {f"{f}:{s}" for f, symbols in tactic.cuda_kernels.items() for s in symbols}
            launched = _launched(tactic, spec, backend)
            assert launched <= declared, f"{tactic.label} on {case.id} launches {sorted(launched - declared)}, " \
                                         "which its cuda_kernels do not declare"
            exercised.add(tactic.label)
    # (without nvmath-python the cublaslt source has no tactics to exercise: they say so, and are left out)
    assert exercised == {t.label for t in _cuda_tactics()
                         if t.cuda_kernels and not (t.source == "cublaslt" and cublaslt.unavailable_reason())}


def test_cuda_tactics_declare_every_kernel_they_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU: each CUDA tactic prepared on every case it can run, with the kernels stubbed (nothing is
    compiled) and NumPy arrays for device memory; each launch must be of a kernel the tactic declares."""
    from reprobuild.kernels import attention, conv
    from reprobuild.kernels.backend import get_backend

    backend = get_backend("cpu")
    monkeypatch.setattr(cuda_launch, "kernel", lambda backend, filename, name, dtype="float32": (filename, name))
    for module in (attention, conv):  # the tensor-core and attention tactics only check the backend's type
        monkeypatch.setattr(module, "CudaBackend", type(backend))
    monkeypatch.setattr(cublaslt, "unavailable_reason", lambda: None)  # prepared, never bound: no library needed
    _check_declarations(backend)


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_cuda_tactics_declare_every_kernel_they_launch_on_the_gpu() -> None:
    from reprobuild.kernels.backend import get_backend

    _check_declarations(get_backend("cuda"))


_MUTATORS = frozenset({"append", "update", "setdefault", "pop", "clear", "add", "extend", "insert", "remove", "popitem",
                       "discard"})


def _mutated_module_containers(module: Any) -> list[str]:
    """The module-level dicts, lists and sets of ``module`` that its functions change (a store into one, or a
    mutating method call), as "name (line)"."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    containers = set()
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if isinstance(value, (ast.Dict, ast.List, ast.Set)) or (
                isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("dict", "list",
                                                                                                       "set")):
            containers |= {t.id for t in targets if isinstance(t, ast.Name)}
    found = []
    for n in ast.walk(tree):
        store = isinstance(n, ast.Subscript) and isinstance(n.ctx, (ast.Store, ast.Del))
        call = isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _MUTATORS
        target = n.value if store else n.func.value if call else None  # type: ignore[attr-defined]
        if isinstance(target, ast.Name) and target.id in containers:
            found.append(f"{target.id} (line {n.lineno})")
    return found


def test_no_value_a_tactic_identity_covers_changes_while_the_process_runs() -> None:
    """A tactic's identity covers the module-level values its code reaches; one that fills at run time (a cache of
    library handles) changes the identity after the first run, and the next build fails its lock check (cuBLASLt's
    handle dict did, on the H100). Such state belongs in a functools cache, or in a framework module."""
    import importlib

    from reprobuild.kernels.code_digest import closure

    modules = set()
    for tactic in builtin_registry().all():
        modules |= {name.rpartition(".")[0] for name in closure([type(tactic)], tactic.ops_by_name).values}
    problems = []
    for name in sorted(m for m in modules if m.startswith("reprobuild.")):
        module = importlib.import_module(name)
        problems += [f"{name}: {what}" for what in _mutated_module_containers(module)]
    assert not problems, problems
