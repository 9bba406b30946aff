"""The builder: config, per-layer tactic selection and engine assembly."""

from __future__ import annotations

from reprobuild.builder.builder import Builder, BuildResult
from reprobuild.builder.config import BuilderConfig, ProgressMonitor

__all__ = ["BuildResult", "Builder", "BuilderConfig", "ProgressMonitor"]
