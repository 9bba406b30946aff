"""ruff and mypy stay clean (configured in pyproject.toml). Skipped, with the reason, where they are not installed.

mypy cannot follow setuptools' package-dir mapping (engine/ installs as reprobuild.engine), so the test lays the
three source folders out as one package tree of symbolic links and checks that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def _module_available(name: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _module_available("ruff"), reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def package_tree(root: Path) -> Path:
    """reprobuild/ with engine/ and kernels/ linked in as its subpackages, as the installed layout has them."""
    pkg = root / "reprobuild"
    pkg.mkdir(parents=True)
    for entry in sorted(Path(REPO, "reprobuild").iterdir()):
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "engine").symlink_to(Path(REPO, "engine"))
    (pkg / "kernels").symlink_to(Path(REPO, "kernels"))
    return root


@pytest.mark.skipif(not _module_available("mypy"), reason="mypy is not installed (pip install -e '.[dev]')")
@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_mypy_is_clean(tmp_path: Path) -> None:
    tree = package_tree(tmp_path / "src")
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(Path(REPO, "pyproject.toml")), "--cache-dir", str(cache),
         "-p", "reprobuild"],
        cwd=tree, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(tree)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(cache, ignore_errors=True)
