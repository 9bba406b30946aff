"""reprobuild: deterministic, reproducible builds of GPU inference engines from ONNX.

The top-level names are imported lazily, so that ``import reprobuild.engine`` (the lean runtime) loads neither
the builder nor onnx.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AlgorithmCandidate": "reprobuild.builder",
    "AlgorithmContext": "reprobuild.builder",
    "AlgorithmSelector": "reprobuild.builder",
    "ReplaySelector": "reprobuild.builder",
    "TimingCache": "reprobuild.builder",
    "Builder": "reprobuild.builder",
    "ForcingSelector": "reprobuild.builder",
    "ManifestDiff": "reprobuild.diffing",
    "diff": "reprobuild.diffing",
    "BuilderConfig": "reprobuild.builder",
    "BuildResult": "reprobuild.builder",
    "ProgressMonitor": "reprobuild.builder",
    "Refitter": "reprobuild.builder",
    "RefitResult": "reprobuild.builder",
    "Plugin": "reprobuild.registry.plugins",
    "PluginRegistry": "reprobuild.registry.plugins",
    "plugin_registry": "reprobuild.registry.plugins",
    "register_plugin": "reprobuild.registry.plugins",
    "Engine": "reprobuild.engine",
    "ExecutionContext": "reprobuild.engine",
    "GpuAllocator": "reprobuild.engine",
    "Runtime": "reprobuild.engine",
    "ErrorRecorder": "reprobuild.core.logger",
    "Logger": "reprobuild.core.logger",
    "Severity": "reprobuild.core.logger",
    "Manifest": "reprobuild.manifest",
    "read_manifest": "reprobuild.manifest",
    "write_manifest": "reprobuild.manifest",
    "NetworkDefinition": "reprobuild.ir",
    "OnnxParser": "reprobuild.frontend",
    "network_from_onnx_bytes": "reprobuild.frontend",
    "network_from_onnx_path": "reprobuild.frontend",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reprobuild' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
