"""The builder: config, per-layer tactic selection and engine assembly."""

from __future__ import annotations

from reprobuild.builder.builder import Builder, BuildResult
from reprobuild.builder.config import BuilderConfig, ProgressMonitor
from reprobuild.builder.refit import RefitResult, RefitSelector, Refitter
from reprobuild.builder.replay import ReplaySelector
from reprobuild.builder.selector import (
    AlgorithmCandidate,
    AlgorithmContext,
    AlgorithmSelector,
    BuildPlan,
    ForcingSelector,
    TimingSelector,
)
from reprobuild.builder.timing_cache import TimingCache

__all__ = [
    "AlgorithmCandidate",
    "AlgorithmContext",
    "AlgorithmSelector",
    "BuildPlan",
    "BuildResult",
    "Builder",
    "BuilderConfig",
    "ForcingSelector",
    "ProgressMonitor",
    "RefitResult",
    "RefitSelector",
    "Refitter",
    "ReplaySelector",
    "TimingCache",
    "TimingSelector",
]
