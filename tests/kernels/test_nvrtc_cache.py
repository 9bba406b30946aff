"""The NVRTC cubin cache on disk (GPU host only): atomic writes create no directories (issue 20), so the cache
creates its own, and a compile in a fresh cache directory stores its cubin there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import CUDA_SKIP

PROBE = 'extern "C" __global__ void reprobuild_cache_probe(float* x) { x[0] = 1.0f; }\n'


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_a_compile_creates_the_cache_directory_and_stores_its_cubin(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.kernels.backend import get_backend
    from reprobuild.kernels.nvrtc import cache_directory, load_source

    monkeypatch.setenv("REPROBUILD_CACHE_DIR", str(tmp_path / "missing" / "cache"))
    directory = Path(str(cache_directory()))
    assert not directory.exists()
    backend = get_backend("cuda")
    compiled = load_source(f"cache_probe_{tmp_path.name}.cu", PROBE, backend.compute_capability, backend.device_id)
    cubins = list(directory.glob("*.cubin"))
    assert len(cubins) == 1 and compiled.cubin_sha256 in {c.read_bytes()[:64].decode() for c in cubins}
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temp or lock file left
