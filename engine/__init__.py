"""reprobuild.engine: the runtime side (engine file, Runtime, Engine, ExecutionContext, memory planning).

It never imports the builder or onnx: a deployment needs only this package, the kernels and the engine file.
"""

from __future__ import annotations

from reprobuild.engine.allocator import GpuAllocator
from reprobuild.engine.format import FORMAT_VERSION, deserialize_engine, serialize_engine
from reprobuild.engine.runtime import Binding, Engine, ExecutionContext, Runtime

__all__ = ["FORMAT_VERSION", "Binding", "Engine", "ExecutionContext", "GpuAllocator", "Runtime",
           "deserialize_engine", "serialize_engine"]
