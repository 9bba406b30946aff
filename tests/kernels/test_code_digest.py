"""Per-tactic identity: a tactic's digest covers exactly the code it runs, so adding a tactic or an op changes no
other tactic's digest, while editing code a tactic runs changes its digest."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

from reprobuild.kernels.code_digest import code_closure, code_sha256
from reprobuild.kernels.tactic import default_registry

MODULE = "reprobuild.kernels._digest_probe"

BASE = '''
from reprobuild.kernels.tactic import Tactic

SCALE = 2


def helper(x):
    return x * SCALE


class First(Tactic):
    family, ops, name, backend = "probe", ("Relu",), "first", "cpu"

    def prepare(self, layer, backend):
        return lambda inputs, outputs, workspace: helper(inputs[0])
'''


def _load(tmp_path: Path, name: str, source: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[MODULE]
    return module


def test_adding_a_tactic_leaves_the_others_digest_and_editing_its_code_changes_it(tmp_path: Path) -> None:
    sys.modules[MODULE] = base = _load(tmp_path, "v1", BASE)
    try:
        digest = code_sha256([base.First])
        closure = code_closure([base.First])
    finally:
        sys.modules.pop(MODULE, None)
    assert f"{MODULE}.helper" in closure and f"{MODULE}.SCALE (constant)" in closure
    added = BASE + '''

class Second(Tactic):
    family, ops, name, backend = "probe", ("Relu",), "second", "cpu"

    def prepare(self, layer, backend):
        return lambda inputs, outputs, workspace: helper(inputs[0]) + 1
'''
    for name, source, same in (("v2", added, True), ("v3", BASE.replace("SCALE = 2", "SCALE = 3"), False),
                               ("v4", BASE.replace("x * SCALE", "x * SCALE + 0"), False)):
        module = _load(tmp_path, name, source)
        sys.modules[MODULE] = module
        try:
            assert (code_sha256([module.First]) == digest) is same, name
        finally:
            sys.modules.pop(MODULE, None)


def test_no_registered_tactic_runs_another_tactics_class() -> None:
    """Sibling tactics never enter each other's closure: a new tactic cannot change an existing one's digest."""
    tactics = default_registry().all()
    classes = {f"{type(t).__module__}.{type(t).__qualname__}" for t in tactics}
    for tactic in tactics:
        own = {f"{c.__module__}.{c.__qualname__}" for c in type(tactic).__mro__}
        for roots in tactic.code_objects():
            own |= {f"{c.__module__}.{c.__qualname__}" for c in getattr(roots, "__mro__", ())}
        foreign = set(code_closure(tactic.code_objects())) & (classes - own)
        assert not foreign, f"{tactic.label} runs code of other tactics: {sorted(foreign)}"


def test_reference_tactics_cover_their_op_definition_only() -> None:
    registry = default_registry()
    relu = registry.get("Relu", "cpu_Relu", 1)
    conv = registry.get("Conv", "cpu_Conv", 1)
    assert "reprobuild.ops.op_activation.Relu" in code_closure(relu.code_objects())
    assert "reprobuild.ops.op_conv.Conv" not in code_closure(relu.code_objects())
    assert relu.source_sha256 != conv.source_sha256
