"""kernels/tactics.lock.json: every built-in tactic's identity, committed. The lock equals what the code gives
(so a behaviour change without a version bump fails here), the lock command refuses to change an existing
version's identity, a build fails closed when the code no longer matches the lock, and a Runtime takes identities
from the lock without computing any."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels import identity
from reprobuild.kernels.identity import Identity, LockMismatchError, parse_lock
from reprobuild.registry import builtin_registry, lock
from reprobuild.registry.lock import LOCK_PATH, builtin_identities, changed, lock_text, update
from tests.helpers import EXAMPLES


@pytest.fixture(scope="module")
def identities() -> dict[str, Identity]:
    return builtin_identities()


@pytest.fixture(scope="module")
def entries() -> dict[str, dict]:
    return parse_lock(Path(LOCK_PATH).read_text())


def test_the_lock_holds_exactly_the_identities_the_code_gives(identities: dict[str, Identity],
                                                              entries: dict[str, dict]) -> None:
    problems = changed(identities, entries)
    assert not problems, ("tactics.lock.json does not match the code:\n" + "\n".join(problems) +
                          "\nA tactic whose computation changed needs a version bump; then run "
                          "`python -m reprobuild.registry.lock`")
    assert Path(LOCK_PATH).read_text() == lock_text(identities)  # canonical: sorted, nothing else in it


def _altered(entries: dict[str, dict], label: str) -> dict[str, dict]:
    out = json.loads(json.dumps(entries))
    out[label]["code_sha256"] = "0" * 64
    out[label]["kernels"] = {k: "0" * 64 for k in out[label]["kernels"]}
    return out


def test_the_lock_command_refuses_a_changed_identity_without_a_version_bump(identities: dict[str, Identity],
                                                                            entries: dict[str, dict]) -> None:
    label = "conv.cuda_direct v2"
    with pytest.raises(LockMismatchError) as err:
        update(identities, _altered(entries, label))
    message = str(err.value)
    assert f"{label}: code_sha256 differ(s) from tactics.lock.json" in message
    assert "kernel conv.cu:conv_direct" in message and "bump the `version`" in message and "--renormalize" in message
    assert "conv.cuda_im2col_tiled" not in message
    # the normalizer's own change is accepted with the flag; new tactics are added and removed ones dropped
    assert update(identities, _altered(entries, label), renormalize=True) == lock_text(identities)
    fewer = {k: v for k, v in entries.items() if k != label}
    more = {**entries, "conv.cuda_retired v1": entries[label]}
    assert update(identities, fewer) == update(identities, more) == lock_text(identities)
    assert changed(identities, more) == ["conv.cuda_retired v1 is in tactics.lock.json but no built-in tactic has it"]


def test_the_lock_command_line(identities: dict[str, Identity], entries: dict[str, dict], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(lock, "builtin_identities", lambda: identities)
    path = tmp_path / "tactics.lock.json"
    stale = json.dumps({"normalizer": 1, "tactics": _altered(entries, "gemm.cpu_blas v1")})
    path.write_text(stale)
    assert lock.main(["--lock", str(path), "--check"]) == LockMismatchError.exit_code
    assert lock.main(["--lock", str(path)]) == LockMismatchError.exit_code
    assert path.read_text() == stale and "gemm.cpu_blas v1" in capsys.readouterr().err
    assert lock.main(["--lock", str(path), "--renormalize"]) == 0
    assert lock.main(["--lock", str(path), "--check"]) == 0
    assert path.read_text() == Path(LOCK_PATH).read_text()
    path.unlink()
    assert lock.main(["--lock", str(path)]) == 0 and path.read_text() == Path(LOCK_PATH).read_text()


def test_a_build_fails_closed_when_a_tactics_code_no_longer_matches_the_lock(entries: dict[str, dict],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """As if softmax.cpu_numpy's code had changed without a version bump (the lock is the old identity)."""
    monkeypatch.setattr(identity, "locked", lambda: _altered(entries, "softmax.cpu_numpy v1"))
    network, _ = network_from_onnx_path(f"{EXAMPLES}/mlp.onnx")
    with pytest.raises(LockMismatchError) as err:
        Builder().build(network, BuilderConfig(backend="cpu", iterations=1, warmup=0))
    message = str(err.value)
    assert "softmax.cpu_numpy v1: code_sha256 differ(s)" in message and "bump its `version`" in message
    assert "python -m reprobuild.registry.lock" in message and "gemm.cpu_blas" not in message


def test_a_runtime_takes_identities_from_the_lock_and_computes_none(monkeypatch: pytest.MonkeyPatch) -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    engine = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, warmup=0)).engine

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Runtime computed a tactic identity from source")

    for tactic in builtin_registry().all():  # forget what this process computed or looked up
        monkeypatch.delitem(tactic.__dict__, "code_sha256", raising=False)
    monkeypatch.setattr(identity, "_COMPUTED", {})
    monkeypatch.setattr(identity, "compute_identity", refuse)
    context = Runtime().deserialize_engine(engine).create_execution_context()
    image = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert context.execute({"image": image})["probs"].shape == (2, 10)


def test_an_installation_without_its_lock_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "LOCK_FILE", "missing.lock.json")
    with pytest.raises(LockMismatchError, match=r"missing.lock.json cannot be read .* reinstall reprobuild"):
        identity.locked.__wrapped__()
