"""Running reprobuild under another OpenBLAS kernel ("core"), the way a machine of another CPU model would.

OpenBLAS as NumPy ships it picks its kernels when it is loaded; ``OPENBLAS_CORETYPE`` overrides the choice, so a
subprocess with it set is this machine with another BLAS core, everything else equal: the fingerprint must say so,
and the pins and goldens must still pass (compared within tolerance, the difference named).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reprobuild.kernels.backend import get_backend
from tests.helpers import REPO


def other_core() -> str:
    """An OpenBLAS core this CPU can run, other than the one this process runs: Haswell (AVX2, the issue's
    example), or Sandybridge (AVX) where this process already runs Haswell. Skips where NumPy's BLAS is not an
    OpenBLAS of x86-64 (an Arm, MKL or Accelerate NumPy has no such switch)."""
    fp = get_backend("cpu").fingerprint()
    if fp["blas.api"] != "openblas":
        pytest.skip(f"NumPy's BLAS here is {fp['blas.api']} ({fp['blas']}), not OpenBLAS: OPENBLAS_CORETYPE "
                    "changes nothing")
    flags = fp["cpu.flags"].split()
    if "avx2" not in flags or "fma" not in flags:
        pytest.skip(f"this CPU lacks AVX2/FMA (flags: {fp['cpu.flags']}); the test switches between x86-64 cores "
                    "Haswell and Sandybridge")
    return "Sandybridge" if fp["blas.core"].lower() == "haswell" else "Haswell"


def with_core(core: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the repository root with ``OPENBLAS_CORETYPE=core``."""
    env = {**os.environ, "OPENBLAS_CORETYPE": core}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def fingerprint_with_core(core: str) -> dict[str, str]:
    """The CPU fingerprint a process with ``OPENBLAS_CORETYPE=core`` records."""
    done = with_core(core, ["-c", "import json; "
                                  "from reprobuild.environment.fingerprint import environment_fingerprint; "
                                  "from reprobuild.kernels.backend import get_backend; "
                                  "print(json.dumps(environment_fingerprint(get_backend('cpu'))))"])
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))
