"""Every CUDA kernel source compiles with NVRTC, on any machine: NVRTC is a library (the ``nvidia-cuda-nvrtc``
wheel), it needs no GPU. Each package ``.cu`` file for each element type, and the generated
kernels of every case the generated tactics take, with exactly the options and headers ``kernels/nvrtc.py`` uses,
for an H100 (sm_90) and an A100 (sm_80). A GPU host then still has to run them (the ``gpu`` tests); this catches
what NVRTC refuses (a missing declaration, a header it does not have) before a device is needed."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.helpers import REPO
from tests.kernels.nvrtc_compile import library_path

pytestmark = pytest.mark.skipif(library_path() is None, reason="NVRTC is not installed (on Linux x86-64: "
                                                               "pip install 'nvidia-cuda-nvrtc>=13,<14')")


def compiled(what: str, arch: str = "90") -> dict[str, Any]:
    """``tests.kernels.nvrtc_compile`` run in its own process (NVRTC is never loaded into the test process)."""
    out = subprocess.run([sys.executable, "-m", "tests.kernels.nvrtc_compile", what, arch], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("arch", ["90", "80"])
def test_every_package_kernel_compiles_with_nvrtc(arch: str) -> None:
    result = compiled("package", arch)
    assert result["compiled"] >= 30
    assert not result["failures"], "\n\n".join(f"{f['name']}:\n{f['log']}" for f in result["failures"])


def test_every_generated_kernel_of_the_cases_compiles_with_nvrtc() -> None:
    result = compiled("generated")
    assert result["compiled"] > 20 and result["families"] == ["elementwise_fused", "logic"]
    assert not result["failures"], "\n\n".join(f"{f['name']}:\n{f['log']}" for f in result["failures"])


def test_a_source_nvrtc_refuses_is_reported_with_its_log() -> None:
    (failure,) = compiled("broken")["failures"]
    assert "not_declared" in failure["log"]
