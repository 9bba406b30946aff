from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers import CUDA_SKIP

#: reprobuild.builder.timing_lock.LOCK_DIR_VARIABLE (spelled out: importing the builder here would slow collection)
LOCK_DIR_VARIABLE = "REPROBUILD_LOCK_DIR"
#: Each test session draws fresh random inputs; set REPROBUILD_TEST_SEED to replay a failing session.
SESSION_SEED = int(os.environ.get("REPROBUILD_TEST_SEED", str(int.from_bytes(os.urandom(4), "little"))))


def pytest_report_header(config: pytest.Config) -> list[str]:
    cuda = "usable" if CUDA_SKIP is None else f"not usable ({CUDA_SKIP}); gpu tests skip"
    return [f"reprobuild: REPROBUILD_TEST_SEED={SESSION_SEED}", f"reprobuild: cuda {cuda}"]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """Fresh random numbers per session and test; the header prints the seed that reproduces them."""
    return np.random.default_rng([SESSION_SEED, zlib.crc32(request.node.nodeid.encode())])


@pytest.fixture(scope="session", autouse=True)
def timing_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The session's builds take turns on the timing lock among themselves only (REPROBUILD_LOCK_DIR, which the
    CLI's subprocesses inherit): another test suite on the machine never makes them queue, and they time only to
    pick tactics whose outputs the tests check, never to compare speeds. A directory set by the caller is kept."""
    if os.environ.get(LOCK_DIR_VARIABLE):
        yield
        return
    os.environ[LOCK_DIR_VARIABLE] = str(tmp_path_factory.mktemp("timing-locks"))
    try:
        yield
    finally:
        del os.environ[LOCK_DIR_VARIABLE]
