"""Frontends that fill a NetworkDefinition from a model file. Only ONNX for now."""

from __future__ import annotations

from reprobuild.frontend.onnx_parser import (
    ModelInfo,
    OnnxParser,
    network_from_onnx_bytes,
    network_from_onnx_path,
)
from reprobuild.frontend.onnx_support import InvalidNodesError, UnsupportedNodesError

__all__ = ["InvalidNodesError", "ModelInfo", "OnnxParser", "UnsupportedNodesError", "network_from_onnx_bytes",
           "network_from_onnx_path"]
