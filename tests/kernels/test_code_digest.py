"""The Python part of a tactic's identity covers exactly the code it runs and what that code reaches: adding a
tactic or an op, a docstring, a comment, or reformatting changes no digest, while editing the code, a constant (an
array's bytes included) or an op it looks up by name changes it."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from reprobuild.kernels.code_digest import IdentityError, closure, code_closure, python_sha256
from reprobuild.ops import get_op
from reprobuild.registry import default_registry

MODULE = "reprobuild.kernels._digest_probe"

BASE = '''
import numpy as np

from reprobuild.kernels.tactic import Tactic

SCALE = 2
TABLE = np.array([[1.0, 0.5], [0.0, 2.0]])


def helper(x):
    return x * SCALE + TABLE[0, 1]


class First(Tactic):
    family, ops, name, backend = "probe", ("Relu",), "first", "cpu"

    def prepare(self, layer, backend):
        return lambda inputs, outputs, workspace: helper(inputs[0])
'''


def _load(tmp_path: Path, name: str, source: str, module_name: str = MODULE) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[module_name]
    return module


def _digest(tmp_path: Path, name: str, source: str) -> str:
    module = _load(tmp_path, name, source)
    sys.modules[MODULE] = module
    try:
        return python_sha256([module.First])
    finally:
        sys.modules.pop(MODULE, None)


SAME = {
    "another tactic": BASE + '''

class Second(Tactic):
    family, ops, name, backend = "probe", ("Relu",), "second", "cpu"

    def prepare(self, layer, backend):
        return lambda inputs, outputs, workspace: helper(inputs[0]) + 1
''',
    "a docstring": BASE.replace("    return x * SCALE",
                                '    """Scaled, then shifted: say why here."""\n    return x * SCALE'),
    "a comment": BASE.replace("SCALE = 2", "SCALE = 2  # the factor\n# and a line of its own"),
    "layout": BASE.replace("return x * SCALE + TABLE[0, 1]", "return (x * SCALE\n            + TABLE[0, 1])"),
    "an annotation": BASE.replace("def helper(x):", "def helper(x: float) -> float:"),
}
CHANGED = {
    "an int constant": BASE.replace("SCALE = 2", "SCALE = 3"),
    "an array's bytes": BASE.replace("[0.0, 2.0]", "[0.0, 2.5]"),
    "an array's dtype": BASE.replace("[0.0, 2.0]])", "[0.0, 2.0]], dtype=np.float32)"),
    "the code": BASE.replace("x * SCALE +", "x * SCALE - "),
}


@pytest.mark.parametrize("edit", sorted(SAME))
def test_cosmetic_edits_change_no_digest(tmp_path: Path, edit: str) -> None:
    assert _digest(tmp_path, "edited", SAME[edit]) == _digest(tmp_path, "base", BASE)


@pytest.mark.parametrize("edit", sorted(CHANGED))
def test_edits_of_what_runs_change_the_digest(tmp_path: Path, edit: str) -> None:
    assert _digest(tmp_path, "edited", CHANGED[edit]) != _digest(tmp_path, "base", BASE)


HELPERS = """
SCALE = 2


def helper(x):
    return x * SCALE + 0.5
"""
USER = """
from reprobuild.kernels.tactic import Tactic

from {helpers} import helper


class First(Tactic):
    family, ops, name, backend = "probe", ("Relu",), "first", "cpu"

    def prepare(self, layer, backend):
        return lambda inputs, outputs, workspace: helper(inputs[0])
"""


def _digest_split(tmp_path: Path, helpers_module: str, user_module: str, helpers: str = HELPERS) -> str:
    """The digest of a tactic whose helper lives in another module, both under the given module names."""
    sys.modules[helpers_module] = _load(tmp_path, helpers_module.replace(".", "_"), helpers, helpers_module)
    try:
        user = _load(tmp_path, user_module.replace(".", "_"), USER.format(helpers=helpers_module), user_module)
        sys.modules[user_module] = user
        return python_sha256([user.First])
    finally:
        sys.modules.pop(helpers_module, None)
        sys.modules.pop(user_module, None)


def test_moving_code_between_modules_changes_no_digest(tmp_path: Path) -> None:
    """Identity names reprobuild's code without its module (normalizer 2): a change of layout — the tactic's
    module renamed, or its helper moved into another package — keeps every identity, while editing the helper
    still changes it."""
    base = _digest_split(tmp_path, "reprobuild.kernels._probe_helpers", "reprobuild.kernels._probe_user")
    assert _digest_split(tmp_path, "reprobuild.core._probe_helpers", "reprobuild.kernels.family._probe_user") == base
    assert _digest(tmp_path, "base", BASE) == _digest_as(tmp_path, "moved", BASE, "reprobuild.kernels.moved._probe")
    edited = HELPERS.replace("0.5", "0.25")
    assert _digest_split(tmp_path, "reprobuild.core._probe_helpers", "reprobuild.kernels._probe_user", edited) != base


def _digest_as(tmp_path: Path, name: str, source: str, module_name: str) -> str:
    module = _load(tmp_path, name, source, module_name)
    sys.modules[module_name] = module
    try:
        return python_sha256([module.First])
    finally:
        sys.modules.pop(module_name, None)


def test_the_closure_holds_the_code_and_the_values_it_names(tmp_path: Path) -> None:
    sys.modules[MODULE] = base = _load(tmp_path, "base", BASE)
    try:
        found = closure([base.First])
        texts = code_closure([base.First])
    finally:
        sys.modules.pop(MODULE, None)
    assert {f"{MODULE}.helper", f"{MODULE}.First"} <= set(found.code)
    assert set(found.values) == {f"{MODULE}.SCALE", f"{MODULE}.TABLE"}
    assert found.values[f"{MODULE}.TABLE"][0] == "ndarray"
    assert "return x * SCALE" in texts[f"{MODULE}.helper"] and f"{MODULE}.SCALE (constant)" in texts


LOOKUP = '''
from reprobuild.kernels.tactic import Tactic


def run(x, name):
    from reprobuild.ops.registry import get_op

    return get_op("Sigmoid").compute(None, {}, x), get_op(name)


class First(Tactic):
    family, ops, name, backend = "probe", ("Relu",), "first", "cpu"

    def prepare(self, layer, backend):
        return lambda inputs, outputs, workspace: run(inputs[0], layer.attr("op"))
'''


def test_ops_looked_up_by_name_are_followed_and_computed_names_must_be_declared(tmp_path: Path) -> None:
    """A literal lookup follows the op's class (Sigmoid's code, and the formula table's ``sigmoid`` it computes
    through); a lookup by a computed name is refused until the tactic declares the ops it may reach, which are then
    followed."""
    sys.modules[MODULE] = module = _load(tmp_path, "lookup", LOOKUP)
    try:
        with pytest.raises(IdentityError, match=r"look\(s\) ops up by a name computed at run time; declare"):
            closure([module.First])
        found = closure([module.First], ("Tanh",))
    finally:
        sys.modules.pop(MODULE, None)
    # an op is followed to its layer definition, the half that computes (its ONNX half never runs in a tactic)
    assert found.ops == {"Sigmoid": "reprobuild.layers.op_activation.Sigmoid", "Tanh": "reprobuild.layers.op_math.Tanh"}
    assert {"reprobuild.layers.formulas.sigmoid", "reprobuild.layers.op_math.Tanh"} <= set(found.code)
    assert not any(name.startswith("reprobuild.ops.") for name in found.code)


SHADOW = '''
from reprobuild.kernels.tactic import Tactic

SCALE = 2


def scale(x):
    return x * SCALE


def helper(x, scale):
    total = [scale * v for v in x]
    def inner(y):
        return y + scale
    return inner(sum(total))


class First(Tactic):
    family, ops, name, backend = "probe", ("Relu",), "first", "cpu"

    def prepare(self, layer, backend):
        return lambda inputs, outputs, workspace: helper(inputs[0], 3)
'''


def test_a_local_name_is_not_the_global_of_that_name(tmp_path: Path) -> None:
    """A parameter (or an assigned name, or a closure's variable) named like a module global reads the local, so
    the global's code is not part of the identity: editing ``scale`` changes nothing ``helper`` runs."""
    sys.modules[MODULE] = module = _load(tmp_path, "shadow", SHADOW)
    try:
        found = closure([module.First])
    finally:
        sys.modules.pop(MODULE, None)
    assert f"{MODULE}.helper" in found.code and f"{MODULE}.scale" not in found.code
    edited = SHADOW.replace("return x * SCALE", "return x * SCALE * 2")
    assert _digest(tmp_path, "shadow", SHADOW) == _digest(tmp_path, "shadow_edited", edited)


def test_no_registered_tactic_runs_another_tactics_class() -> None:
    """Sibling tactics never enter each other's closure: a new tactic cannot change an existing one's digest."""
    tactics = default_registry().all()
    classes = {f"{type(t).__module__}.{type(t).__qualname__}" for t in tactics}
    for tactic in tactics:
        own = {f"{c.__module__}.{c.__qualname__}" for c in type(tactic).__mro__}
        for roots in tactic.code_objects():
            own |= {f"{c.__module__}.{c.__qualname__}" for c in getattr(roots, "__mro__", ())}
        foreign = set(closure(tactic.code_objects(), tactic.ops_by_name).code) & (classes - own)
        assert not foreign, f"{tactic.label} runs code of other tactics: {sorted(foreign)}"


def test_reference_tactics_cover_their_layer_definition_and_the_ops_it_looks_up() -> None:
    registry = default_registry()
    relu, conv, fused = (registry.get(op, f"cpu_{op}", get_op(op).version)
                         for op in ("Relu", "Conv", "FusedElementwise"))
    assert "reprobuild.layers.op_activation.Relu" in closure(relu.code_objects()).code
    assert "reprobuild.layers.op_conv.Conv" not in closure(relu.code_objects()).code
    assert not any(name.startswith("reprobuild.ops.") for name in closure(relu.code_objects()).code)
    assert relu.code_sha256 != conv.code_sha256
    # FusedElementwise runs each step through the registry by the step's op name: it declares the ops it may reach
    steps = closure(fused.code_objects(), fused.ops_by_name)
    assert fused.ops_by_name and set(steps.ops) == set(fused.ops_by_name)
    assert "reprobuild.layers.formulas.sigmoid" in steps.code
