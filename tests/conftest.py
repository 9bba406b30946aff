from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from tests.helpers import CUDA_SKIP

#: Each test session draws fresh random inputs; set REPROBUILD_TEST_SEED to replay a failing session.
SESSION_SEED = int(os.environ.get("REPROBUILD_TEST_SEED", str(int.from_bytes(os.urandom(4), "little"))))


def pytest_report_header(config: pytest.Config) -> list[str]:
    cuda = "usable" if CUDA_SKIP is None else f"not usable ({CUDA_SKIP}); gpu tests skip"
    return [f"reprobuild: REPROBUILD_TEST_SEED={SESSION_SEED}", f"reprobuild: cuda {cuda}"]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """Fresh random numbers per session and test; the header prints the seed that reproduces them."""
    return np.random.default_rng([SESSION_SEED, zlib.crc32(request.node.nodeid.encode())])
