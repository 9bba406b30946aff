"""The layer contract (``[tool.importlinter]`` in pyproject.toml) holds, and the import graph has no cycle.

grimp, which import-linter builds on, cannot see setuptools' package-dir mapping (engine/ and kernels/ install as
``reprobuild.engine`` and ``reprobuild.kernels``), so both tests read the tree of symbolic links that the mypy test
lays out. To run the contract by hand: ``python -m tests.test_layers`` (README, Development).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.test_tooling import package_tree

try:
    import grimp
except ImportError:  # import-linter (which brings grimp) is a dev extra
    grimp = None

NOT_INSTALLED = "import-linter is not installed (pip install -e '.[dev]')"
NO_LINKS = "symbolic links need privileges on Windows"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the pyproject config over ``tree``, where ``reprobuild`` is found first on the path."""
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache", str(Path(REPO, "pyproject.toml"))],
        cwd=tree, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)},
    )


def cycles(imports: Mapping[str, Set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative), each sorted,
    in sorted order: every cycle of the graph lies within one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(imports.get(target, ())))))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_cycles_finds_each_component() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert cycles(graph) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.skipif(grimp is None, reason=NOT_INSTALLED)
@pytest.mark.skipif(os.name == "nt", reason=NO_LINKS)
def test_layer_contracts_are_kept(tmp_path: Path) -> None:
    result = lint_imports(package_tree(tmp_path / "src"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(grimp is None, reason=NOT_INSTALLED)
@pytest.mark.skipif(os.name == "nt", reason=NO_LINKS)
def test_no_import_cycles(tmp_path: Path) -> None:
    """Every import counts: those inside functions and under ``TYPE_CHECKING`` too (grimp reads them all)."""
    tree = package_tree(tmp_path / "src")
    script = ("import json, sys, grimp\n"
              "graph = grimp.build_graph('reprobuild', cache_dir=None)\n"
              "json.dump({m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules},"
              " sys.stdout)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tree, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tree)})
    assert result.returncode == 0, result.stderr
    graph = {m: set(targets) for m, targets in json.loads(result.stdout).items()}
    assert len(graph) > 150, f"grimp found only {len(graph)} modules under {tree}: are the links followed?"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        "  " + ", ".join(c) + "\n    " + "\n    ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c)
        for c in found)


def main() -> int:
    """``python -m tests.test_layers``: lint-imports over a linked tree, for developers (README, Development)."""
    root = Path(tempfile.mkdtemp(prefix="reprobuild-layers-"))
    try:
        result = lint_imports(package_tree(root / "src"))
        print(result.stdout + result.stderr, end="")
        return result.returncode
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
