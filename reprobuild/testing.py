"""reprobuild's pytest plugin: determinism regression tests in your own test suite.

Installed with reprobuild (entry point ``pytest11``), it gives every test session:

- ``assert_deterministic(engine, runs=..., threads=..., ...)``: the ``reprobuild verify`` plan in-process; on
  failure the assertion message names the tier reached and the first diverging layer and its tactic;
- ``assert_matches_golden(engine, manifest)``: the golden inputs a manifest recorded, bit for bit;
- ``assert_no_diff(a, b, ignore=...)``: two manifests or engines pin the same content, or the failure shows
  ``reprobuild diff``'s explanation;
- the ``pinned_engine`` fixture: ``pinned_engine(model, manifest)`` replays the pinned manifest (strict
  environment policy, fail-closed) or, when the manifest does not exist yet, makes a timed build and writes it,
  so the next run replays it. ``pytest --reprobuild-repin`` rebuilds and rewrites every pin instead.

Nothing heavy is imported until a test uses one of these.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import numpy as np

    from reprobuild.engine import Engine
    from reprobuild.manifest.models import Pinned
    from reprobuild.verify.run import AgainstResult, VerifyReport

# The lazy imports: reprobuild's own modules (engine, builder, frontend, manifest, verify, diffing) are imported
# inside the functions below, each marked "lazy: plugin", on purpose. pytest imports this module (entry point
# ``pytest11``) in EVERY test run on a machine where reprobuild is installed, reprobuild's tests or not; at module
# level they would load NumPy, onnx and the builder (seconds) into every such run. They load when a test first
# uses a helper or the fixture.

Path = str | os.PathLike[str]


def _engine(engine: Engine | bytes | Path) -> Engine:
    from reprobuild.engine import Engine, Runtime  # lazy: plugin, see the note at the top

    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, (bytes, bytearray)):
        return Runtime().deserialize_engine(bytes(engine))
    with open(engine, "rb") as f:
        return Runtime().deserialize_engine(f.read())


def _pinned(manifest: Any) -> Pinned:
    """A Pinned, Manifest, manifest file or engine file (its embedded manifest)."""
    from reprobuild.diffing import load_side  # lazy: plugin, see the note at the top
    from reprobuild.manifest.models import Pinned  # lazy: plugin, see the note at the top

    return manifest if isinstance(manifest, Pinned) else load_side(manifest).pinned


def _records(manifest: Any, engine: Engine) -> bool:
    """Whether ``manifest`` (a Manifest or a manifest file) names ``engine`` as the engine written with it."""
    from reprobuild.manifest.models import Manifest  # lazy: plugin, see the note at the top

    record = manifest.engine if isinstance(manifest, Manifest) else None
    if isinstance(manifest, (str, os.PathLike)):
        from reprobuild.diffing import load_side  # lazy: plugin, see the note at the top

        side = load_side(manifest)
        record = side.engine if side.kind == "manifest" else None
    return record is not None and record.sha256 == engine.sha256


def _at_shape(engine: Engine, input_shapes: Mapping[str, Sequence[int]] | None, profile: int,
              inputs: Mapping[str, Any] | None) -> Engine:
    """A dynamic engine at ``input_shapes`` (else the shapes of ``inputs``, else the profile's opt shapes) with
    ``profile``'s tactics; a fixed-shape engine as it is (shapes given for one are refused)."""
    from reprobuild.core.errors import UsageError  # lazy: plugin, see the note at the top

    if not engine.is_dynamic:
        if input_shapes or profile:
            raise UsageError("input_shapes and profile are for an engine built with optimization profiles; this one "
                             "has fixed shapes")
        return engine
    if not 0 <= profile < engine.num_optimization_profiles:
        raise UsageError(f"optimization profile {profile} does not exist; the engine has "
                         f"{engine.num_optimization_profiles}")
    shapes = {name: tuple(value.shape) for name, value in (inputs or {}).items()}
    return engine.at_input_shapes(profile, {**shapes, **(input_shapes or {})})


def assert_deterministic(engine: Engine | bytes | Path, runs: int = 10, contexts: int = 2, threads: int = 1,
                         streams: int = 1, processes: int = 1, inputs: Mapping[str, np.ndarray] | None = None,
                         seed: int = 0, batch_invariance: bool = False, traced_runs: int = 3,
                         input_shapes: Mapping[str, Sequence[int]] | None = None, profile: int = 0) -> VerifyReport:
    """Fail unless every tested dimension gave identical bits; returns the report (its ``tier`` among others).
    A dynamic engine runs at ``input_shapes`` (else the shapes of ``inputs``, else the profile's opt shapes)
    with optimization profile ``profile``."""
    from reprobuild.engine.golden import golden_inputs  # lazy: plugin, see the note at the top
    from reprobuild.verify.locate import locate  # lazy: plugin, see the note at the top
    from reprobuild.verify.run import VerifyPlan, verify  # lazy: plugin, see the note at the top

    loaded = _at_shape(_engine(engine), input_shapes, profile, inputs)
    feeds = dict(inputs) if inputs is not None else golden_inputs(loaded.inputs, seed)
    plan = VerifyPlan(runs=runs, contexts=contexts, threads=threads, streams=streams, processes=processes,
                      batch_invariance=batch_invariance, traced_runs=traced_runs)
    report = verify(loaded, feeds, plan, f"seed {seed}" if inputs is None else "given", seed=seed)
    if not report.deterministic:
        failed = [f"{d.name}: {d.detail}" for d in report.dimensions if d.tested and not d.identical]
        found = locate(loaded, feeds)
        where = (f"first diverging layer: {found.layer.name!r} ({found.layer.op}) with tactic {found.layer.tactic}"
                 f" ({found.layer.differing} of {found.layer.total} elements, max {found.layer.max_ulp} ulp)"
                 if found.layer is not None else found.detail)
        raise AssertionError(f"engine {loaded.sha256[:16]} is not deterministic (tier reached: {report.tier}); "
                             + "; ".join(failed) + f"; {where}")
    return report


def assert_matches_golden(engine: Engine | bytes | Path, manifest: Any) -> AgainstResult:
    """Fail unless the engine reproduces, bit for bit, the golden outputs the manifest recorded at build time."""
    from reprobuild.verify.locate import locate_against  # lazy: plugin, see the note at the top
    from reprobuild.verify.run import check_against  # lazy: plugin, see the note at the top

    loaded, pinned = _engine(engine), _pinned(manifest)
    result, inputs = check_against(loaded, pinned)
    if result.record_differences and _records(manifest, loaded):
        raise AssertionError("the manifest records this engine, but its pinned part is not the one the engine embeds "
                             "(edited after the build): " + "; ".join(result.record_differences))
    if not result.matched:
        found = locate_against(loaded, inputs, pinned.golden.layers)
        where = (f"first layer differing from the build: {found.layer.name!r} ({found.layer.op}) with tactic "
                 f"{found.layer.tactic}" if found.layer is not None else found.detail)
        differing = [k for k, v in result.outputs.items() if v != "identical"]
        raise AssertionError(f"outputs {differing} differ from the golden digests the build recorded; {where}")
    return result


def assert_no_diff(a: Any, b: Any, ignore: Sequence[str] = ()) -> None:
    """Fail, showing ``reprobuild diff``'s explanation, unless two manifests or engines pin the same content."""
    from reprobuild.diffing import diff  # lazy: plugin, see the note at the top
    from reprobuild.diffing.render import to_text  # lazy: plugin, see the note at the top

    result = diff(a, b, ignore=ignore)
    if not result.identical:
        raise AssertionError("the builds differ:\n" + to_text(result))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reprobuild")
    group.addoption("--reprobuild-repin", action="store_true",
                    help="pinned_engine: make a timed build and rewrite every pinned manifest instead of replaying")


@pytest.fixture
def pinned_engine(request: pytest.FixtureRequest) -> Callable[..., Engine]:
    """``pinned_engine(model, manifest, backend="auto", env_policy="strict", input_shapes=None, profiles=()) ->
    Engine``: replay the pin, or make it when it does not exist yet (or with ``--reprobuild-repin``).
    ``input_shapes`` fixes a model's dynamic dimensions; ``profiles`` (each an OptimizationProfile or
    ``{input: (min, opt, max)}``) builds a dynamic engine instead (a replay takes the manifest's)."""
    repin = bool(request.config.getoption("--reprobuild-repin", default=False))

    def make(model: Path, manifest: Path, backend: str = "auto", env_policy: str = "strict",
             input_shapes: Mapping[str, Sequence[int]] | None = None,
             profiles: Sequence[Any] = ()) -> Engine:
        from reprobuild.builder import Builder, BuilderConfig, ReplaySelector  # lazy: plugin, see the note at the top
        from reprobuild.builder.replay import profiles_from_manifest  # lazy: plugin, see the note at the top
        from reprobuild.engine import Runtime  # lazy: plugin, see the note at the top
        from reprobuild.frontend import network_from_onnx_path  # lazy: plugin, see the note at the top
        from reprobuild.ir import OptimizationProfile  # lazy: plugin, see the note at the top
        from reprobuild.manifest import read_manifest, write_manifest  # lazy: plugin, see the note at the top

        wanted = []
        for given in profiles:  # OptimizationProfile, or {input: (min, opt, max)}
            if isinstance(given, OptimizationProfile):
                wanted.append(given)
                continue
            profile = OptimizationProfile()
            for name, (low, opt, high) in dict(given).items():
                profile.set_shape(name, low, opt, high)
            wanted.append(profile)
        replaying = os.path.exists(manifest) and not repin
        pinned = read_manifest(manifest) if replaying else None
        chosen = profiles_from_manifest(pinned) if pinned is not None else wanted
        network, _ = network_from_onnx_path(model, input_shapes=input_shapes, profiles=chosen)
        if pinned is not None:
            config = BuilderConfig.from_record(pinned.pinned.config)
            config.algorithm_selector = ReplaySelector(pinned, env_policy)
            for profile in chosen:
                config.add_optimization_profile(profile)
            result = Builder().build(network, config)
        else:
            config = BuilderConfig(backend=backend)
            for profile in chosen:
                config.add_optimization_profile(profile)
            result = Builder().build(network, config)
            write_manifest(manifest, result.manifest)
            warnings.warn(f"pinned a new manifest at {os.fspath(manifest)}: commit it, and later runs replay it",
                          stacklevel=2)
        return Runtime().deserialize_engine(result.engine)

    return make
